"""Wire helpers every role shares: TLS credentials and certificates, server addresses.
Imports only neocloud.domain and third-party libraries; nothing of the services."""
