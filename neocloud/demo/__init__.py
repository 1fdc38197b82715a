"""`neocloud demo`: a whole site on one machine playing a scenario through the job API, with its YAML as package data.
Drives the product through its entry points (scheduler, agent, client, billing); only the CLI imports it."""
