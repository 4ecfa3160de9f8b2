"""Spark SQL expressions from config may call only allowlisted functions.

A source mapping's ``columns``, ``filter`` and ``explode`` are Spark SQL expressions evaluated on
the executors. Spark SQL can reach the JVM (``reflect``, ``java_method``), read files
(``SELECT ... FROM parquet.`/path```), decrypt (``aes_decrypt``) or print the session's user:
a config file must not be a way to run code or read secrets. :func:`check_expression` finds every
function an expression calls (outside string literals and back-quoted names) and refuses any
that is not in :data:`ALLOWED_FUNCTIONS`, and refuses subqueries.

:data:`ALLOWED_FUNCTIONS` holds Spark's built-in functions of the groups that compute a value
from a row's own columns (string, date and time, math, conditional, predicate, conversion,
array, map, struct, JSON, CSV, lambda, bitwise, hash, URL, collection) and the aggregate and
window functions (``row_number() OVER (...)`` numbers the lines of a basket file), as Spark 4's
function registry groups them; ``tests/test_sqlcheck.py`` checks each against the running Spark.
Left out: the ``misc_funcs`` group (``reflect``, ``java_method``, ``try_reflect``, ``aes_*``, ``current_user``,
``input_file_name``, ...), generator, sketch, variant, XML (XPath), Avro, Protobuf and
table-valued functions, and anything not built in (UDFs).
"""

from __future__ import annotations

import re

__all__ = ["ALLOWED_FUNCTIONS", "ALLOWED_GROUPS", "check_expression", "functions_called", "names_referenced"]


# Words that may stand before "(" in an expression without being a function call.
_KEYWORDS = frozenset({
    "and", "or", "not", "in", "is", "like", "ilike", "rlike", "regexp", "between", "case", "when", "then",
    "else", "end", "as", "cast", "try_cast", "distinct", "exists", "any", "some", "all", "escape", "interval",
    "decimal", "dec", "numeric", "varchar", "char", "character", "string",
    "timestamp", "timestamp_ntz", "timestamp_ltz", "date", "binary", "int", "integer", "bigint", "smallint",
    "tinyint", "long", "short", "byte", "float", "double", "real", "boolean", "collate", "from", "for",
    "both", "leading", "trailing", "null", "true", "false", "over", "by", "partition", "order",
})

_LITERAL = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|`(?:[^`]|``)*`""", re.DOTALL)
_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*(?:\s*\.\s*[A-Za-z_][A-Za-z0-9_]*)*)\s*\(")
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", re.DOTALL)
_NAME = re.compile(r"`((?:[^`]|``)*)`|\b([A-Za-z_][A-Za-z0-9_]*)\b(?!\s*\()")
_SUBQUERY = re.compile(r"\bselect\b", re.IGNORECASE)

# Spark 4.x built-ins by registry group (function names only; operators need no check).
_BY_GROUP = {
    "string_funcs": """
    ascii base64 bit_length btrim char char_length character_length chr collate collation concat_ws
    contains decode elt encode endswith find_in_set format_number format_string initcap instr
    is_valid_utf8 lcase left len length levenshtein locate lower lpad ltrim luhn_check
    make_valid_utf8 mask octet_length overlay position printf quote randstr regexp_count
    regexp_extract regexp_extract_all regexp_instr regexp_replace regexp_substr repeat replace right
    rpad rtrim sentences soundex space split split_part startswith substr substring substring_index
    to_binary to_char to_number to_varchar translate trim try_to_binary try_to_number
    try_validate_utf8 ucase unbase64 upper validate_utf8
    """,
    "datetime_funcs": """
    add_months convert_timezone curdate current_date current_time current_timestamp current_timezone
    date_add date_diff date_format date_from_unix_date date_part date_sub date_trunc dateadd
    datediff datepart day dayname dayofmonth dayofweek dayofyear extract from_unixtime
    from_utc_timestamp hour last_day localtimestamp make_date make_dt_interval make_interval
    make_time make_timestamp make_timestamp_ltz make_timestamp_ntz make_ym_interval minute month
    monthname months_between next_day now quarter second session_window time_bucket time_diff
    time_from_micros time_from_millis time_from_seconds time_to_micros time_to_millis
    time_to_seconds time_trunc timestamp_micros timestamp_millis timestamp_seconds to_date to_time
    to_timestamp to_timestamp_ltz to_timestamp_ntz to_unix_timestamp to_utc_timestamp trunc
    try_make_interval try_make_timestamp try_make_timestamp_ltz try_make_timestamp_ntz try_to_date
    try_to_time try_to_timestamp unix_date unix_micros unix_millis unix_seconds unix_timestamp
    weekday weekofyear window window_time year
    """,
    "math_funcs": """
    abs acos acosh asin asinh atan atan2 atanh bin bround cbrt ceil ceiling conv cos cosh cot csc
    degrees div e exp expm1 factorial floor greatest hex hypot least ln log log10 log1p log2 mod
    negative pi pmod positive pow power radians rand randn random rint round sec sign signum sin
    sinh sqrt tan tanh try_add try_divide try_mod try_multiply try_subtract unhex uniform
    width_bucket
    """,
    "conditional_funcs": """
    between coalesce if ifnull nanvl nullif nullifzero nvl nvl2 when zeroifnull
    """,
    "predicate_funcs": """
    and equal_null ilike in isnan isnotnull isnull like not or regexp regexp_like rlike
    """,
    "conversion_funcs": """
    bigint binary boolean cast date decimal double float int smallint string time timestamp tinyint
    """,
    "array_funcs": """
    array array_append array_compact array_contains array_distinct array_except array_insert
    array_intersect array_join array_max array_min array_position array_prepend array_remove
    array_repeat array_size array_union arrays_overlap arrays_zip flatten get sequence shuffle slice
    sort_array
    """,
    "map_funcs": """
    map map_concat map_contains_key map_entries map_from_arrays map_from_entries map_keys map_values
    str_to_map
    """,
    "struct_funcs": """
    named_struct struct
    """,
    "json_funcs": """
    from_json get_json_object json_array_length json_object_keys json_tuple schema_of_json to_json
    """,
    "csv_funcs": """
    from_csv schema_of_csv to_csv
    """,
    "lambda_funcs": """
    aggregate array_sort exists filter forall map_filter map_zip_with reduce transform
    transform_keys transform_values zip_with
    """,
    "bitwise_funcs": """
    bit_count bit_get getbit shiftleft shiftright shiftrightunsigned
    """,
    "hash_funcs": """
    crc32 hash md5 sha sha1 sha2 xxhash64
    """,
    "url_funcs": """
    parse_url try_parse_url try_url_decode url_decode url_encode
    """,
    "collection_funcs": """
    cardinality concat element_at reverse size try_element_at
    """,
    "agg_funcs": """
    any any_value approx_count_distinct approx_percentile approx_top_k approx_top_k_accumulate
    approx_top_k_combine array_agg avg bit_and bit_or bit_xor bitmap_and_agg bitmap_construct_agg
    bitmap_or_agg bool_and bool_or collect_list collect_set corr count count_if count_min_sketch
    covar_pop covar_samp every first first_value grouping grouping_id histogram_numeric
    hll_sketch_agg hll_union_agg kll_merge_agg_bigint kll_merge_agg_double kll_merge_agg_float
    kll_sketch_agg_bigint kll_sketch_agg_double kll_sketch_agg_float kurtosis last last_value
    listagg max max_by mean measure median min min_by mode percentile percentile_approx
    percentile_cont percentile_disc regr_avgx regr_avgy regr_count regr_intercept regr_r2 regr_slope
    regr_sxx regr_sxy regr_syy skewness some std stddev stddev_pop stddev_samp string_agg sum
    theta_intersection_agg theta_sketch_agg theta_union_agg try_avg try_sum
    tuple_intersection_agg_double tuple_intersection_agg_integer tuple_sketch_agg_double
    tuple_sketch_agg_integer tuple_union_agg_double tuple_union_agg_integer var_pop var_samp
    variance
    """,
    "window_funcs": """
    cume_dist dense_rank lag lead nth_value ntile percent_rank rank row_number
    """,
}
ALLOWED_GROUPS = frozenset(_BY_GROUP)
ALLOWED_FUNCTIONS = frozenset(name for names in _BY_GROUP.values() for name in names.split())


def functions_called(expression: str) -> set[str]:
    """The lower-cased names of the functions ``expression`` calls (qualified names keep their dots)."""
    return _calls(_LITERAL.sub(" ", expression))


def names_referenced(expression: str) -> set[str]:
    """The column names ``expression`` may read: bare words that are not calls, keywords or
    numbers, and back-quoted names (a superset: lambda variables count too)."""
    names = set()
    for match in _NAME.finditer(_STRING.sub(" ", expression)):
        quoted, bare = match.groups()
        if quoted is not None:
            names.add(quoted.replace("``", "`"))
        elif bare.lower() not in _KEYWORDS:
            names.add(bare)
    return names


def _calls(bare: str) -> set[str]:
    names = {re.sub(r"\s+", "", match.group(1)).lower() for match in _CALL.finditer(bare)}
    return names - _KEYWORDS


def check_expression(expression: str) -> str:
    """``expression`` unchanged if it calls only allowlisted functions and has no subquery;
    otherwise ValueError saying which calls are refused."""
    bare = _LITERAL.sub(" ", expression)
    if _SUBQUERY.search(bare):
        raise ValueError("a subquery (SELECT) is not allowed in a config expression")
    refused = sorted(_calls(bare) - ALLOWED_FUNCTIONS)
    if refused:
        raise ValueError(
            f"function{'s' if len(refused) > 1 else ''} {', '.join(refused)} not allowed in a config expression "
            "(only Spark's built-in string, date, math, conditional, conversion, collection, JSON, hash, "
            "aggregate and window functions: crm_spark/sqlcheck.py)"
        )
    return expression
