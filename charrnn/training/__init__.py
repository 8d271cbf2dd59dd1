"""Training: the loop, its schedule, weight average and dropout, batches of streams and of
records, and torchrun's process group."""
