"""The only code that knows URLs, filesystems, object layout, atomic writes,
shard and manifest formats, and Parquet. A local folder and an s3:// prefix
(any S3-compatible endpoint) behave the same."""
