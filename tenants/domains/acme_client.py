"""The one place that talks ACME: builds the `acme` client for ACME_DIRECTORY_URL, with the
platform's account (created once per directory, its key stored encrypted).
"""

import josepy as jose
from acme import client, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings
from django.db import IntegrityError, transaction

from core.crypto import secret_decrypt, secret_encrypt
from tenants.models import AcmeAccount

USER_AGENT = "platform-control-plane (acme-python)"


def _network(key: jose.JWKRSA) -> client.ClientNetwork:
    # A path verifies the server with that CA bundle (Pebble); True uses the system CAs.
    verify = settings.ACME_CA_BUNDLE or True
    return client.ClientNetwork(key, user_agent=USER_AGENT, verify_ssl=verify,
                                timeout=min(settings.ACME_TIMEOUT_SECONDS, 30))


def _account_key(account: AcmeAccount) -> jose.JWKRSA:
    return jose.JWKRSA(key=serialization.load_pem_private_key(secret_decrypt(account.key_encrypted), None))


def _account_row(directory_url: str) -> AcmeAccount:
    account = AcmeAccount.objects.filter(directory_url=directory_url).first()
    if account is not None:
        return account
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        with transaction.atomic():
            return AcmeAccount.objects.create(
                directory_url=directory_url, key_encrypted=secret_encrypt(pem),
                contact_email=settings.ACME_CONTACT_EMAIL,
            )
    except IntegrityError:
        # Another worker created it at the same moment: use theirs.
        return AcmeAccount.objects.get(directory_url=directory_url)


def acme_client() -> client.ClientV2:
    """A client registered with the directory (the account is created on first use).

    Raises requests exceptions when the directory is unreachable, and acme errors otherwise.
    """
    directory_url = settings.ACME_DIRECTORY_URL
    account = _account_row(directory_url)
    net = _network(_account_key(account))
    directory = client.ClientV2.get_directory(directory_url, net)
    acme = client.ClientV2(directory, net)
    if account.account_url:
        net.account = messages.RegistrationResource(body=messages.Registration(), uri=account.account_url)
        return acme
    new = messages.NewRegistration.from_data(
        email=account.contact_email or None, terms_of_service_agreed=True
    )
    try:
        regr = acme.new_account(new)
    except errors.ConflictError as exc:
        # The key is already registered (an earlier run died before saving the URL).
        regr = messages.RegistrationResource(body=messages.Registration(), uri=exc.location)
        net.account = regr
    AcmeAccount.objects.filter(pk=account.pk).update(account_url=regr.uri)
    return acme


def acme_account_forget() -> None:
    """Drop the stored account URL so the next client registers again (the CA lost it)."""
    AcmeAccount.objects.filter(directory_url=settings.ACME_DIRECTORY_URL).update(account_url="")
