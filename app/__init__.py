"""Static-embedding service speaking the OpenAI embeddings protocol."""
