"""posepipe's pipeline: sources, decoding, stages, tracking, Arrow schema and the job runner."""
