"""Escrow keys, addresses, script and descriptor: BIP173/BIP350/BIP380 vectors and Core's key_io vectors."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.core.errors import ValidationError, WalletError
from node.payments import address_codec, escrow
from node.payments.address_codec import AddressError
from node.payments.models import Escrow, KeyRef

G = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
G2 = "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5"
G3 = "02f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9"
G4 = "02e493dbf1c10d80f3581e4904930b1404cc6c13900ee0758474fa94abe8c4cd13"
B, V, M, V2 = (KeyRef(k) for k in (G, G2, G3, G4))

BECH32_VALID = [
    "A12UEL5L",
    "a12uel5l",
    "an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs",
    "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
    "11" + "q" * 82 + "c8247j",
    "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
    "?1ezyfcl",
]
BECH32M_VALID = [
    "A1LQFN3A",
    "a1lqfn3a",
    "an83characterlonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11sg7hg6",
    "abcdef1l7aum6echk45nj3s0wdvt2fg8x9yrzpqzd3ryx",
    "11" + "l" * 82 + "ludsr8",
    "split1checkupstagehandshakeupstreamerranterredcaperredlc445v",
    "?1v759aa",
]
BECH32_INVALID = [
    "\x201nwldj5",  # hrp character out of range
    "\x7f1axkwrx",
    "an84characterslonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1569pvx",  # too long
    "pzry9x0s0muk",  # no separator
    "1pzry9x0s0muk",  # empty hrp
    "x1b4n0q5v",  # invalid data character
    "li1dgmt3",  # too short checksum
    "A1G7SGD8",  # checksum calculated with upper-case hrp
    "10a06t8",  # empty hrp
    "1qzzfhee",
]
# BIP173/BIP350 segwit vectors (from Core's rpc_validateaddress.py): address -> scriptPubKey (main).
SEGWIT_VALID = {
    "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4": "0014751e76e8199196d454941c45d1b3a323f1433bd6",
    "bc1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qccfmv3": (
        "00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262"
    ),
    "bc1qqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvses5wp4dt": (
        "0020000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433"
    ),
    "bc1pqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvses7epu4h": (
        "5120000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433"
    ),
    "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0": (
        "512079be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
    ),
}
# Valid bech32m, but not a spendable output type today: refused for refunds.
SEGWIT_UNSPENDABLE = {
    "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kt5nd6y": (
        "5128751e76e8199196d454941c45d1b3a323f1433bd6751e76e8199196d454941c45d1b3a323f1433bd6"
    ),
    "BC1SW50QGDZ25J": "6002751e",
    "bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs": "5210751e76e8199196d454941c45d1b3a323",
}
SEGWIT_INVALID = [
    "tc1qw508d6qejxtdg4y5r3zarvary0c5xw7kg3g4ty",  # invalid hrp
    "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5",  # bad checksum
    "BC13W508D6QEJXTDG4Y5R3ZARVARY0C5XW7KN40WF2",  # v1+ with bech32
    "bc1rw5uspcuh",
    "bc10w508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kw5rljs90",
    "BC1QR508D6QEJXTDG4Y5R3ZARVARYV98GJ9P",  # v0 program of 16 bytes
    "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3t4",  # mixed case
    "bc1zw508d6qejxtdg4y5r3zarvaryvqyzf3du",  # wrong padding
    "bc1gmk9yu",  # empty data
    "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd",  # bech32 instead of bech32m
    "BC1S0XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ54WELL",
    "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kemeawh",  # bech32m instead of bech32
    "bc1p38j9r5y49hruaue7wxjce0updqjuyyx0kh56v8s25huc6995vvpql3jow4",  # invalid character
    "BC130XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ7ZWS8R",  # witness version 19
    "bc1pw5dgrnzv",  # program of 1 byte
    "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v8n0nx0muaewav253zgeav",  # 41 bytes
    "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v07qwwzcrf",  # padding over 4 bits
]
SEGWIT_INVALID_TEST = [
    "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sL5k7",  # mixed case
    "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3pjxtptv",  # non-zero padding
    "tb1z0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqglt7rf",  # bech32 instead of bech32m
    "tb1q0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq24jc47",  # bech32m instead of bech32
    "tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq47Zagq",  # mixed case
    "tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vpggkg4j",  # non-zero padding
]
# Core's src/test/data/key_io_valid.json (addresses, one per type and network).
KEY_IO = [
    ("1FsSia9rv4NeEwvJ2GvXrX7LyxYspbN2mo", "76a914a31c06bd463e3923bc1aadbde48b16976c08071788ac", "main"),
    ("36j4NfKv6Akva9amjWrLG6MuSQym1GuEmm", "a914373b819a068f32b7a6b38b6b38729647cfde01c287", "main"),
    ("mzK2FFDEhxqHcmrJw1ysqFkVyhUULo45hZ", "76a914ce28b26c57472737f5c3561a1761185bd8589a4388ac", "test"),
    ("2NC2hEhe28ULKAJkW5MjZ3jtTMJdvXmByvK", "a914ce0bba75891ff9ec60148d4bd4a09ee2dc5c933187", "test"),
    ("mww4LvqtTMKvmeQvizPz2EQv26xTneWrbg", "76a914b4110ba93ac54afc14da3bdd19614774a2d55d2988ac", "signet"),
    ("2N1r7aC69VHeE7yQJPDLi9T1PYq4wnwvjuT", "a9145e5a35ab44b3efaea5129ba22b88ba3e2976614587", "signet"),
    ("n4fajahJrAuKbN7uNsKjLjQkz9Qn5ewJXQ", "76a914fdeca3b08e38af53d7c4c60e3ad208ce5066441088ac", "regtest"),
    ("2MxFajLApXpYk4VodBSZSt7rw8y4ryABkfA", "a91436e9f191e0b75036a77f65e2eaa4752443233fbe87", "regtest"),
    ("bc1qvyq0cc6rahyvsazfdje0twl7ez82ndmuac2lhv", "00146100fc6343edc8c874496cb2f5bbfec88ea9b77c", "main"),
    (
        "bc1p83n3au0rjylefxq2nc2xh2y4jzz4pm6zxj4mw5pagdjjr2a9f36s6jjnnu",
        "51203c671ef1e3913f94980a9e146ba895908550ef4234abb7503d436521aba54c75",
        "main",
    ),
    ("tb1qcrh3yqn4nlleplcez2yndq2ry8h9ncg3qh7n54", "0014c0ef1202759fff90ff19128936814321ee59e111", "test"),
    (
        "tb1pae5um27ahn8n73pgexe3kcwlp8dhswpn684h2k2w6t9a7w3eq65qephd5y",
        "5120ee69cdabddbccf3f4428c9b31b61df09db783833d1eb75594ed2cbdf3a3906a8",
        "signet",
    ),
    ("bcrt1qdavt4j2sd7dlhqsavtnfxvzppw6k7qy97tmnu9", "00146f58bac9506f9bfb821d62e69330410bb56f0085", "regtest"),
    (
        "bcrt1qan8gntac7z7me2ejt4hpru42ad2f759fmy0m3ejvs98656znv7eqga4uhv",
        "0020ecce89afb8f0bdbcab325d6e11f2aaeb549f50a9d91fb8e64c814faa685367b2",
        "regtest",
    ),
]


# ---- bech32 / bech32m / base58 ---------------------------------------------------------------


@pytest.mark.parametrize("text", BECH32_VALID)
def test_bech32_valid(text: str) -> None:
    assert address_codec.bech32_decode(text)[2] == address_codec.BECH32


@pytest.mark.parametrize("text", BECH32M_VALID)
def test_bech32m_valid(text: str) -> None:
    assert address_codec.bech32_decode(text)[2] == address_codec.BECH32M


@pytest.mark.parametrize("text", BECH32_INVALID)
def test_bech32_invalid(text: str) -> None:
    with pytest.raises(AddressError):
        address_codec.bech32_decode(text)


@pytest.mark.parametrize(("address", "spk"), SEGWIT_VALID.items())
def test_segwit_valid(address: str, spk: str) -> None:
    assert escrow.parse_address(address, "main") == address.lower()
    assert escrow.script_pubkey(address).hex() == spk


@pytest.mark.parametrize(("address", "spk"), SEGWIT_UNSPENDABLE.items())
def test_future_segwit_versions_decode_but_are_refused(address: str, spk: str) -> None:
    version, program = address_codec.segwit_decode("bc", address)
    assert address_codec.segwit_script(version, program).hex() == spk
    with pytest.raises(ValidationError, match="not a spendable output type"):
        escrow.parse_address(address, "main")


@pytest.mark.parametrize("address", SEGWIT_INVALID)
def test_segwit_invalid(address: str) -> None:
    with pytest.raises(ValidationError) as info:
        escrow.parse_address(address, "main")
    assert "refund_address" in info.value.fields


@pytest.mark.parametrize("address", SEGWIT_INVALID_TEST)
def test_segwit_invalid_testnet(address: str) -> None:
    with pytest.raises(ValidationError):
        escrow.parse_address(address, "test")


@pytest.mark.parametrize(("address", "spk", "network"), KEY_IO)
def test_core_key_io_vectors(address: str, spk: str, network: str) -> None:
    assert escrow.parse_address(address, network) == (address if address[0] in "13mn2" else address.lower())
    assert escrow.script_pubkey(address).hex() == spk
    if address[0] not in "13mn2":
        assert escrow.script_pubkey(address.upper()).hex() == spk


def test_networks_are_kept_apart() -> None:
    regtest = "bcrt1qdavt4j2sd7dlhqsavtnfxvzppw6k7qy97tmnu9"
    with pytest.raises(ValidationError, match="another network"):
        escrow.parse_address(regtest, "test")
    with pytest.raises(ValidationError, match="another network"):
        escrow.parse_address("mzK2FFDEhxqHcmrJw1ysqFkVyhUULo45hZ", "main")
    with pytest.raises(ValidationError, match="another network"):
        escrow.parse_address("1FsSia9rv4NeEwvJ2GvXrX7LyxYspbN2mo", "regtest")
    assert (
        escrow.parse_address(" mzK2FFDEhxqHcmrJw1ysqFkVyhUULo45hZ\n", "regtest") == "mzK2FFDEhxqHcmrJw1ysqFkVyhUULo45hZ"
    )
    with pytest.raises(ValidationError, match="network"):
        escrow.parse_address("bc1qvyq0cc6rahyvsazfdje0twl7ez82ndmuac2lhv", "litecoin")


def test_base58_errors() -> None:
    good = "1FsSia9rv4NeEwvJ2GvXrX7LyxYspbN2mo"
    with pytest.raises(ValidationError, match="checksum"):
        escrow.parse_address(good[:-1] + "p", "main")
    with pytest.raises(ValidationError, match="base58"):
        escrow.parse_address("1FsSia9rv4NeEwvJ2GvXrX7LyxYspbN2m0", "main")
    with pytest.raises(ValidationError):
        escrow.script_pubkey("")
    with pytest.raises(ValidationError):
        escrow.script_pubkey("hello")


@given(st.binary(min_size=0, max_size=40))
def test_base58check_round_trip(payload: bytes) -> None:
    assert address_codec.base58check_decode(address_codec.base58check_encode(payload)) == payload


@given(st.sampled_from(["bc", "tb", "bcrt"]), st.sampled_from([(0, 20), (0, 32), (1, 32)]), st.data())
def test_segwit_round_trip(hrp: str, kind: tuple[int, int], data: st.DataObject) -> None:
    version, size = kind
    program = data.draw(st.binary(min_size=size, max_size=size))
    text = address_codec.segwit_encode(hrp, version, program)
    assert address_codec.segwit_decode(hrp, text) == (version, program)
    assert escrow.script_pubkey(text) == address_codec.segwit_script(version, program)


# ---- keys ------------------------------------------------------------------------------------


def test_parse_key_with_and_without_origin() -> None:
    assert escrow.parse_key(G.upper().replace("0X", "0x")) == KeyRef(G)
    assert escrow.parse_key(f"  [D34DB33F/84'/1H/0h/0/7]{G}  ") == KeyRef(G, "[d34db33f/84h/1h/0h/0/7]")
    assert escrow.parse_key(f"[d34db33f]{G}").origin == "[d34db33f]"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "66 hex"),
        (G[2:], "66 hex"),
        ("04" + G[2:], "66 hex"),
        (G + "00", "66 hex"),
        ("bcrt1qdavt4j2sd7dlhqsavtnfxvzppw6k7qy97tmnu9", "66 hex"),
        (f"[d34db33/84h]{G}", "origin"),
        (f"[d34db33f/84x]{G}", "origin"),
        (f"[d34db33f/2147483648]{G}", "too large"),
        (f"[d34db33f/84h{G}", "origin"),
        ("02" + "ff" * 32, "not a point"),
    ],
)
def test_parse_key_refuses(text: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason) as info:
        escrow.parse_key(text)
    assert set(info.value.fields) == {"buyer_pubkey"}


def test_parse_key_names_the_field() -> None:
    with pytest.raises(ValidationError) as info:
        escrow.parse_key("nope", field="moderator")
    assert set(info.value.fields) == {"moderator"}


def test_off_curve_x_refused() -> None:
    # x = 5: 5^3 + 7 = 132 is not a square mod p (no point has this x).
    with pytest.raises(ValidationError, match="not a point"):
        escrow.parse_key("02" + (5).to_bytes(32, "big").hex())


# ---- script ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "hex_"),
    [
        (0, "00"),
        (1, "51"),
        (16, "60"),
        (17, "0111"),
        (127, "017f"),
        (128, "028000"),
        (255, "02ff00"),
        (256, "020001"),
        (6480, "025019"),
        (32767, "02ff7f"),
        (32768, "03008000"),
        (65535, "03ffff00"),
        (-1, "0181"),
        (-128, "028080"),
    ],
)
def test_script_number_minimal(n: int, hex_: str) -> None:
    assert escrow.script_number(n).hex() == hex_


def test_witness_script_layout() -> None:
    script = escrow.witness_script(B, V, M, V2, 6480)
    expected = (
        "52" + "21" + G + "21" + G2 + "21" + G3 + "53ae"  # OP_2 <B> <V> <M> OP_3 OP_CHECKMULTISIG
        "7364"  # OP_IFDUP OP_NOTIF
        "21" + G4 + "ad"  # <V2> OP_CHECKSIGVERIFY
        "025019" + "b2" + "68"  # <6480> OP_CHECKSEQUENCEVERIFY OP_ENDIF
    )
    assert script.hex() == expected
    assert escrow.witness_script(B, V, M, V2, 16).hex().endswith("60b268")


def test_duplicate_keys_and_bad_timeouts_refused() -> None:
    with pytest.raises(ValidationError, match="different"):
        escrow.witness_script(B, V, M, KeyRef(G, "[d34db33f]"), 6480)
    with pytest.raises(ValidationError, match="different"):
        escrow.descriptor(B, B, M, V2, 6480)
    for bad in (0, 65536, -5):
        with pytest.raises(ValidationError, match="timeout"):
            escrow.descriptor(B, V, M, V2, bad)


def test_escrow_address_is_p2wsh_of_the_script() -> None:
    script = escrow.witness_script(B, V, M, V2, 6480)
    for network, hrp in (("main", "bc1q"), ("test", "tb1q"), ("signet", "tb1q"), ("regtest", "bcrt1q")):
        address = escrow.escrow_address(script, network)
        assert address.startswith(hrp) and escrow.parse_address(address, network) == address
        assert escrow.script_pubkey(address) == b"\x00\x20" + hashlib.sha256(script).digest()


# ---- descriptor ------------------------------------------------------------------------------


def test_descriptor_checksum_vectors() -> None:
    assert escrow.descriptor_checksum("raw(deadbeef)") == "89f8spxm"
    assert escrow.descriptor_checksum("addr(mi7as51dvLJsizWnTMurtRmrP8hG2m1XvD)") == "gj9tznmy"
    with pytest.raises(ValidationError):
        escrow.descriptor_checksum("wsh(é)")


def test_descriptor_text_and_round_trip() -> None:
    b = KeyRef(G, "[d34db33f/84h/1h/0h/0/7]")
    desc = escrow.descriptor(b, V, M, V2, 6480)
    assert desc == (f"wsh(or_d(multi(2,[d34db33f/84h/1h/0h/0/7]{G},{G2},{G3}),and_v(v:pk({G4}),older(6480))))")
    full = f"{desc}#{escrow.descriptor_checksum(desc)}"
    assert escrow.parse_descriptor(full) == (b, V, M, V2, 6480)
    assert escrow.parse_descriptor(desc) == (b, V, M, V2, 6480)
    with pytest.raises(ValidationError, match="checksum"):
        escrow.parse_descriptor(desc + "#qqqqqqqq")
    with pytest.raises(ValidationError, match="not an escrow"):
        escrow.parse_descriptor(desc.replace("older", "after"))
    with pytest.raises(ValidationError, match="canonical"):
        escrow.parse_descriptor(desc.replace("older(6480)", "older(06480)"))


def _build(checksum: str | None = None, address: str | None = None, network: str = "regtest") -> Escrow:
    desc = escrow.descriptor(B, V, M, V2, 144)
    real_address = escrow.escrow_address(escrow.witness_script(B, V, M, V2, 144), network)
    return escrow.build_escrow(
        B, V, M, V2, 144, checksum or escrow.descriptor_checksum(desc), network, address or real_address
    )


def test_build_escrow() -> None:
    built = _build()
    assert built.descriptor.startswith("wsh(or_d(multi(2,") and built.descriptor[-9] == "#"
    assert built.address.startswith("bcrt1q") and built.timeout_blocks == 144
    assert escrow.escrow_script(built) == escrow.witness_script(B, V, M, V2, 144)
    assert _build(address=built.address.upper()).address == built.address


def test_build_escrow_refuses_a_different_core_answer() -> None:
    other = escrow.escrow_address(escrow.witness_script(B, V, M, V2, 145), "regtest")
    with pytest.raises(WalletError, match="bitcoin_network"):
        _build(address=other)
    with pytest.raises(WalletError, match="checksum"):
        _build(checksum="qqqqqqqq")
    mainnet = escrow.escrow_address(escrow.witness_script(B, V, M, V2, 144), "main")
    with pytest.raises(WalletError, match="regtest"):
        _build(address=mainnet)
