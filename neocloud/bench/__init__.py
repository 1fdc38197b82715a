"""`neocloud bench`: performance targets measured on production-shaped inputs, printed as JSON.
Imports the product like the demo does; nothing imports it but the CLI."""
