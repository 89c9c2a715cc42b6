import java.util.Properties;
import java.util.Random;
import java.util.UUID;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * B2's broker ceiling: Kafka's own Java producer sends `records` records of `bytes` bytes each, keyed by random
 * GUIDs (so they spread over the partitions as highwater's keyed records do), acks=all, batched as a tuned Java
 * client batches. A warm-up of the same records goes first, untimed, so the JIT and the producer's buffers are
 * warm; the timed part runs from the first send to the last acknowledgement. Run with the source launcher:
 *   java -cp <the broker's jars> ProduceCeiling.java <bootstrap> <topic> <records> <bytes> <warm-up records>
 * Prints one line: "sent <n> records of <bytes> bytes in <ms> ms"; exits 1 if any send failed.
 */
public class ProduceCeiling {
  public static void main(String[] args) throws Exception {
    String bootstrap = args[0];
    String topic = args[1];
    int records = Integer.parseInt(args[2]);
    int bytes = Integer.parseInt(args[3]);
    int warmUp = Integer.parseInt(args[4]);
    Properties props = new Properties();
    props.put("bootstrap.servers", bootstrap);
    props.put("acks", "all");
    props.put("linger.ms", "20");
    props.put("batch.size", "1048576");
    props.put("buffer.memory", "268435456");
    props.put("max.request.size", "16777216");
    props.put("compression.type", "none");
    props.put("key.serializer", ByteArraySerializer.class.getName());
    props.put("value.serializer", ByteArraySerializer.class.getName());
    byte[] value = new byte[bytes];
    new Random(records).nextBytes(value);
    byte[][] keys = new byte[records][];
    for (int i = 0; i < records; i++) keys[i] = UUID.randomUUID().toString().getBytes("UTF-8");
    AtomicLong failed = new AtomicLong();
    AtomicReference<Exception> firstError = new AtomicReference<>();
    try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(props)) {
      for (int i = 0; i < warmUp; i++) send(producer, topic, keys[i % records], value, failed, firstError);
      producer.flush();
      long started = System.nanoTime();
      long startedAtMs = System.currentTimeMillis();
      for (int i = 0; i < records; i++) send(producer, topic, keys[i], value, failed, firstError);
      producer.flush();
      long elapsedNs = System.nanoTime() - started;
      long endedAtMs = System.currentTimeMillis();
      if (failed.get() > 0) {
        System.err.println(failed.get() + " sends failed, the first: " + firstError.get());
        System.exit(1);
      }
      System.out.printf("sent %d records of %d bytes in %.3f ms%n", records, bytes, elapsedNs / 1e6);
      // The wall-clock window of the timed sends, for the benchmark's CPU split of the broker.
      System.out.printf("window %d %d%n", startedAtMs, endedAtMs);
    }
  }

  private static void send(KafkaProducer<byte[], byte[]> producer, String topic, byte[] key, byte[] value, AtomicLong failed, AtomicReference<Exception> firstError) {
    producer.send(new ProducerRecord<>(topic, key, value), (metadata, error) -> {
      if (error != null) {
        failed.incrementAndGet();
        firstError.compareAndSet(null, error);
      }
    });
  }
}
