"""Security: certificates (``certs``), TLS contexts (``tls``) and API authorization (``auth``)."""
