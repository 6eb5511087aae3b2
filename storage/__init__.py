"""I/O shared by the jobs and the orchestration: file:// and s3:// URIs, one S3 client, manifests and the
checkpoint store. Plain Python (boto3 + stdlib): it never imports prefect, torch, tasks/, flows/ or
training/, so every side of the project can import it."""
