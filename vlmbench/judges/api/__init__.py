"""VLM API judges: clients, prompting, answer parsing, the answer cache, and a fake server for tests."""
