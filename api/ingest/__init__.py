"""Dataset ingestion: receive, inspect, convert to Parquet, profile, export."""
