"""Custom domains and TLS: verification, certificates (ACME), the nginx edge, self-service pages.

Modelled on Cloudflare for SaaS custom hostnames: a domain's ownership and DNS are checked on a
backoff schedule, certificates are tracked apart from the domain, and the edge serves only
domains that are active. See docs/custom-domains.md.
"""
