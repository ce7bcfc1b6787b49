//! The project's Python virtual environment (.venv): created from docker/requirements.txt on demand.
