-- The compose stack's second database: MLflow's tracking store beside Prefect's (POSTGRES_DB) on one server.
CREATE DATABASE mlflow OWNER emt;
