import { describe, expect, it } from 'vitest';
import { dependencyPom } from '../bench/systems/debezium-runtime.js';
import { workerProperties } from '../bench/systems/b4-debezium.js';

describe('B4 set-up, pure parts', () => {
  it('writes a dependency-only pom with exclusions, every transitive dependency dropped for a bare jar', () => {
    const pom = dependencyPom('sink', [
      { g: 'io.debezium', a: 'debezium-connector-jdbc', v: '3.4.3.Final', bare: true },
      { g: 'org.hibernate.orm', a: 'hibernate-core', v: '7.1.0.Final', exclude: ['org.slf4j'] },
      { g: 'org.postgresql', a: 'postgresql', v: '42.7.7' },
    ]);
    expect(pom).toContain('<artifactId>debezium-connector-jdbc</artifactId><version>3.4.3.Final</version><exclusions><exclusion><groupId>*</groupId><artifactId>*</artifactId></exclusion></exclusions>');
    expect(pom).toContain('<exclusion><groupId>org.slf4j</groupId><artifactId>*</artifactId></exclusion>');
    expect(pom).toContain('<artifactId>postgresql</artifactId><version>42.7.7</version></dependency>');
    expect(pom).toContain('<packaging>pom</packaging>');
  });

  it('points the Connect worker at the bench broker, its plugins and a local REST port', () => {
    const props = workerProperties(['127.0.0.1:9092'], '/cache/plugins', 18083, '/tmp/offsets');
    expect(props.split('\n')).toEqual(expect.arrayContaining([
      'bootstrap.servers=127.0.0.1:9092', 'plugin.path=/cache/plugins', 'listeners=http://127.0.0.1:18083',
      'offset.storage.file.filename=/tmp/offsets', 'value.converter.schemas.enable=true',
    ]));
  });
});
