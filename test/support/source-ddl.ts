/** The PostgreSQL stand-in for a FileTable source (blob ⋈ metadata ⋈ BU map) that the pipeline tests and the convergence test create. */
export const SOURCE_DDL = `
CREATE SCHEMA src;
CREATE TABLE src.bu_map (id uuid PRIMARY KEY);
CREATE TABLE src.blobs (
  stream_id uuid PRIMARY KEY,
  file_stream bytea,
  name text NOT NULL,
  path_locator text NOT NULL UNIQUE,
  parent_path_locator text,
  is_directory boolean NOT NULL DEFAULT false,
  creation_time timestamptz,
  last_write_time timestamptz
);
ALTER TABLE src.blobs ALTER COLUMN file_stream SET STORAGE EXTERNAL;
CREATE TABLE src.meta (
  id uuid PRIMARY KEY,
  "ModifiedOn" timestamptz,
  bu uuid
);
CREATE INDEX ON src.meta ("ModifiedOn", id);
`;
