"""Infrastructure: the shared services (PostgreSQL, an MLflow tracking server) of a many-machine setup."""
