"""RQ jobs and worker processes: campaigns, batches and push delivery."""
