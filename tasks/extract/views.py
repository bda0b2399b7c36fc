"""Arrow's view and large layouts read as the plain ones.

Newer writers (deltalake, polars, DuckDB) write `string_view`, `binary_view` and `list_view`
columns, and others `large_string`, where older ones wrote `string`, `binary` and `list`: the
same logical type in another memory layout. A source hands every batch on in the plain
layout, so a mix across files or batches is never drift and every compute kernel downstream
(filter, take, sort, element-wise joins) applies: pyarrow 26 has no `take` for views and no
join mixing `large_string` with `string`. A batch is at most `source.batch_rows` rows, far
below the 2 GiB a plain string column holds."""

from __future__ import annotations

import pyarrow as pa


def plain_type(t: pa.DataType) -> pa.DataType:
    """`t` with every view layout inside it replaced by the plain one."""
    if pa.types.is_string_view(t) or pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_binary_view(t) or pa.types.is_large_binary(t):
        return pa.binary()
    if pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
        item = t.value_field
        inner = item.with_type(plain_type(item.type))
        return pa.list_(inner) if pa.types.is_list_view(t) else pa.large_list(inner)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        item = t.value_field
        plain = plain_type(item.type)
        if plain == item.type:
            return t
        return pa.list_(item.with_type(plain)) if pa.types.is_list(t) else pa.large_list(item.with_type(plain))
    if pa.types.is_struct(t):
        fields = [t.field(i) for i in range(t.num_fields)]
        plain_fields = [f.with_type(plain_type(f.type)) for f in fields]
        return t if plain_fields == fields else pa.struct(plain_fields)
    if pa.types.is_map(t):
        key, item = t.key_field, t.item_field
        k, v = plain_type(key.type), plain_type(item.type)
        return t if (k, v) == (key.type, item.type) else pa.map_(key.with_type(k), item.with_type(v))
    return t


def plain_schema(schema: pa.Schema) -> pa.Schema:
    """`schema` in plain layouts (the same object when it has no views)."""
    fields = [f.with_type(plain_type(f.type)) for f in schema]
    if all(a.type == b.type for a, b in zip(fields, schema)):
        return schema
    return pa.schema(fields, metadata=schema.metadata)
