"""Standard Webhooks signing: the spec's test vector, generated secrets, rotation, bad secrets."""

import base64
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from tests.webhooks.receiver import Received, spec_signature, spec_verify
from webhooks import signing
from webhooks.errors import WebhookError

# The test vector published with the Standard Webhooks spec (and its reference libraries).
VECTOR = {
    "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "msg_id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "timestamp": 1614265330,
    "body": b'{"test": 2432232314}',
    "signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
}


def test_our_headers_match_the_spec_test_vector():
    headers = signing.sign_headers(
        msg_id=VECTOR["msg_id"], body=VECTOR["body"], secrets=[VECTOR["secret"]],
        at=datetime.fromtimestamp(VECTOR["timestamp"], UTC),
    )
    assert headers == {
        "webhook-id": VECTOR["msg_id"],
        "webhook-timestamp": "1614265330",
        "webhook-signature": VECTOR["signature"],
    }
    # The test's own implementation of the spec agrees, so the receiver's check below is independent.
    ours = spec_signature(VECTOR["secret"], VECTOR["msg_id"], "1614265330", VECTOR["body"])
    assert ours == VECTOR["signature"]


def test_a_generated_secret_verifies_with_the_spec_and_the_library_and_not_with_another():
    secret = signing.secret_generate()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 24
    assert signing.secret_generate() != secret
    body = b'{"type":"tenant.suspended"}'
    headers = signing.sign_headers(msg_id="msg_1", body=body, secrets=[secret], at=datetime.now(UTC))
    got = Received("/", headers, body)
    assert spec_verify(secret, got)
    assert Webhook(secret).verify(body, headers) == {"type": "tenant.suspended"}
    assert not spec_verify(signing.secret_generate(), got)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)  # a changed body fails


def test_during_a_rotation_both_secrets_sign_and_either_verifies():
    new, old = signing.secret_generate(), signing.secret_generate()
    body = b"{}"
    headers = signing.sign_headers(msg_id="msg_2", body=body, secrets=[new, old], at=datetime.now(UTC))
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (new, old):
        assert spec_verify(secret, Received("/", headers, body))


def test_an_old_timestamp_is_refused_by_a_receiver():
    secret = signing.secret_generate()
    headers = signing.sign_headers(msg_id="msg_3", body=b"{}", secrets=[secret],
                                   at=datetime.fromtimestamp(1614265330, UTC))
    assert not spec_verify(secret, Received("/", headers, b"{}"))
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(b"{}", headers)


@pytest.mark.parametrize(
    ("secret", "says"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "starts with 'whsec_'"),
        ("whsec_not base64!", "not valid base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "24 to 64 bytes (this one is 5)"),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), "24 to 64 bytes (this one is 65)"),
    ],
)
def test_a_bad_chosen_secret_is_refused_with_what_to_fix(secret, says):
    with pytest.raises(WebhookError) as error:
        signing.secret_validate(secret)
    assert says in str(error.value)
