"""Persistence: models, migrations, the engine, repositories and the encryption of secrets at rest."""
