"""What every job reports about the machine it runs on (MLflow system metrics). No torch, no prefect."""
