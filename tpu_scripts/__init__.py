"""Create Cloud TPU VMs, install jaxspec on every worker, launch jobs, fetch logs, tear down.

Every subcommand only builds `gcloud compute tpus tpu-vm ...` argv lists and runs them, so
`--dry-run` shows exactly what would happen. See docs/tpu.md.
"""
