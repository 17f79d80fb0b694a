"""Domain operations shared by the API and the tasks: sending work, completion, recounting,
owner controls, webhook secrets and targets, public URLs."""
