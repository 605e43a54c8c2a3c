"""Model plumbing: offline tokenizers, tiny pipelines built from configs, pipeline loading."""
