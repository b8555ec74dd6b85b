"""welcome.json: decrypt GroupSecrets and GroupInfo, verify the signature and confirmation tag."""

from __future__ import annotations

from ..crypto import CipherSuite
from ..framing import MLSMessage
from ..tree_structs import KeyPackage
from ..welcome import decrypt_group_info, decrypt_group_secrets, find_secrets, verify_confirmation_tag
from ..welcome_structs import Welcome
from . import Counts
from ._cases import run_suite_cases


def _check_case(suite: CipherSuite, case: dict) -> None:
    kp = MLSMessage.from_bytes(bytes.fromhex(case["key_package"])).body
    welcome = MLSMessage.from_bytes(bytes.fromhex(case["welcome"])).body
    if not isinstance(kp, KeyPackage) or not isinstance(welcome, Welcome):
        raise AssertionError("vector messages are not a KeyPackage and a Welcome")
    entry = find_secrets(welcome, kp.ref(suite))
    secrets = decrypt_group_secrets(suite, entry, bytes.fromhex(case["init_priv"]), welcome.encrypted_group_info)
    if secrets.psks:
        raise AssertionError("welcome vector unexpectedly uses PSKs")
    group_info = decrypt_group_info(suite, secrets.joiner_secret, None, welcome.encrypted_group_info)
    if not group_info.verify(suite, bytes.fromhex(case["signer_pub"])):
        raise AssertionError("GroupInfo signature does not verify")
    verify_confirmation_tag(suite, group_info, secrets.joiner_secret, None)


def run(cases: list[dict]) -> Counts:
    return run_suite_cases(cases, _check_case, "welcome[{i}] suite {suite}")
