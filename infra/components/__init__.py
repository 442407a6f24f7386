"""One ComponentResource per role: work queues, tables, the alarm topic, the sender, IAM roles."""
