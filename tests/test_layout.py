"""layout.Struct packs with cached, precompiled packers; these tests hold it
to a deliberately naive per-field reference (the C layout rules applied one
field at a time) on random values for every struct of the layout."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from pepc.compiler import layout


def _naive_offsets(s: layout.Struct) -> dict[str, int]:
    out, off = {}, 0
    for f in s.fields:
        assert off % f.align == 0
        out[f.name] = off
        off += f.size
    return out


def naive_pack(s: layout.Struct, values: dict) -> bytes:
    offs = _naive_offsets(s)
    out = bytearray(sum(f.size for f in s.fields))
    for f in s.fields:
        v = values.get(f.name)
        if v is None:
            continue
        off = offs[f.name]
        ch = layout.CTYPES[f.ctype][1]
        if f.ctype == "char":
            data = bytes(v)[: f.count]
            out[off : off + len(data)] = data
        elif f.ctype.startswith("be"):
            struct.pack_into(">" + ch, out, off, v)
        elif f.count > 1:
            struct.pack_into(f"<{f.count}{ch}", out, off, *v)
        else:
            struct.pack_into("<" + ch, out, off, v)
    return bytes(out)


def naive_unpack(s: layout.Struct, data: bytes) -> dict:
    offs = _naive_offsets(s)
    out = {}
    for f in s.fields:
        if f.name.startswith("_pad"):
            continue
        off, ch = offs[f.name], layout.CTYPES[f.ctype][1]
        if f.ctype == "char":
            out[f.name] = bytes(data[off : off + f.count]).rstrip(b"\0")
        elif f.ctype.startswith("be"):
            out[f.name] = struct.unpack_from(">" + ch, data, off)[0]
        elif f.count > 1:
            out[f.name] = list(struct.unpack_from(f"<{f.count}{ch}", data, off))
        else:
            out[f.name] = struct.unpack_from("<" + ch, data, off)[0]
    return out


def _field_value(f: layout.Field):
    if f.ctype == "char":
        return st.binary(max_size=f.count + 8)
    top = (1 << (8 * layout.CTYPES[f.ctype][2])) - 1
    ints = st.integers(0, top)
    return st.lists(ints, min_size=f.count, max_size=f.count) if f.count > 1 else ints


@st.composite
def struct_and_values(draw):
    s = draw(st.sampled_from(layout.STRUCTS + (layout.U32_KEY, layout.U64_VALUE)))
    values = {}
    for f in s.fields:
        if f.name.startswith("_pad") or draw(st.booleans()) is False:
            continue  # missing fields are zero
        values[f.name] = draw(_field_value(f))
    return s, values


@settings(max_examples=400)
@given(struct_and_values())
def test_pack_and_unpack_equal_the_naive_per_field_layout(sv):
    s, values = sv
    data = s.pack(values)
    assert data == naive_pack(s, values)
    assert len(data) == s.size
    assert s.unpack(data) == naive_unpack(s, data)
    assert s.unpack(data + b"\xff" * 3) == naive_unpack(s, data)  # trailing bytes are ignored
    assert s.offsets == _naive_offsets(s)


def test_positional_fast_path_is_pack_in_field_order():
    key = dict(src_plen=24, dst_plen=32, sport_plen=0, dport_plen=16, proto_plen=8, proto=6, src=0x0A000100, dst=0xC0A80101, sport=0, dport=443)
    assert layout.RULE_KEY.pack_values(*key.values()) == naive_pack(layout.RULE_KEY, key)
    mask = dict(best_rank=1 << 60, src_mask=0xFFFFFF00, dst_mask=0xFFFFFFFF, sport_mask=0, dport_mask=0xFFFF,
                src_plen=24, dst_plen=32, sport_plen=0, dport_plen=16, proto_plen=8)
    # MASK mixes a little-endian rank with big-endian masks: two packers
    assert layout.MASK.packer is None
    assert layout.MASK.pack_values(*mask.values()) == naive_pack(layout.MASK, mask)
    assert layout.MASK.unpack_values(naive_pack(layout.MASK, mask)) == tuple(mask.values())
    assert layout.RULE_KEY.packer is not None and layout.RULE_KEY.packer.size == layout.RULE_KEY.size
