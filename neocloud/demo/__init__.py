"""`neocloud demo`: a whole site on one machine playing a scenario through the job API, with its YAML as package data.
Drives the product through its entry points (the scheduler, the agent, the client, billing); nothing imports it but the CLI."""
