"""Generation: the sampler and its one-character steppers, beam search, writing text out, and
the sample command's jobs."""
