"""The datasetq web app: a FastAPI API over the store, and the dashboard it serves."""
