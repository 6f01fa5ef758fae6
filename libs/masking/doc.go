// Package masking finds sensitive values inside arbitrary bytes and
// replaces them. It owns the detectors (email, ssn, card, phone, iban, jwt,
// aws_key, github_token, openai_key, slack_token, private_key), the
// replacement actions (redact, keep, token) and Masker, which is compiled
// once from a Config and then called for every value on the data path:
// DataRow cells, COPY lines, error and notice texts, notification payloads,
// JSON documents.
//
// # Invariants
//
//   - Never panics, on any input, including binary values and invalid
//     UTF-8: detectors work on bytes and assume no encoding. (A panic would
//     be a bug; if one happened anyway, AppendMasked fails closed to
//     WholeMarker and Contains reports true.)
//   - Never passes through a value it failed to scan: the output of
//     AppendMasked is re-scanned and masked again if masking exposed a new
//     match; after a bounded number of passes every letter and digit of the
//     value becomes '*'. So AppendMasked's output never contains a match.
//   - Allocation-free on clean values: Contains, and AppendMasked of a value
//     with no match into a dst with room, allocate nothing. Matches are
//     found by hand-written scanners (no regexp): one pass over the bytes
//     with a 256-entry anchor table ('@', digits, '+', '(', '-', the first
//     letters of known prefixes) and a table of allowed next bytes, then
//     validation around the anchor. Cost is linear in the value length.
//   - Contains(v) is false exactly when AppendMasked(dst, v) appends v
//     unchanged, so callers may skip the copy for clean values.
//
// # Replacements
//
// Masking a span inside a text never changes the structure of the text it
// sits in (a JSON string or document, a CSV record, a COPY text line, a
// PostgreSQL array literal):
//
//   - A span never contains a quote, a tab, a comma or a raw newline, never
//     starts or ends inside a backslash or percent escape sequence, and
//     never contains a dangling backslash. The one exception is a
//     private_key block, which may hold raw newlines, complete escape
//     sequences (\n) and the commas of its "Proc-Type:" header lines,
//     and is replaced as a whole.
//   - Replacements are made only of ASCII letters, digits, '_', '[', ']'
//     and '*', plus (keep) the span's own separators: no quotes,
//     backslashes, tabs, newlines, commas or delimiters are introduced.
//   - Redact writes "[<detector>]" for a span ("[email]", "[card]") and
//     WholeMarker ("****") for a whole value (AppendWhole).
//   - Keep N (0..MaxKeep) replaces every ASCII letter or digit (and every
//     non-ASCII rune) but the last N with '*' and keeps punctuation and
//     spaces: "***-**-6789", "************4242", "(***) ***-2671". It
//     never shows more than half of the characters ("bob" keeps "b").
//     For an email, N applies to the local part; the domain is masked except
//     its top-level label: "**er@*******.com". A private key is always
//     redacted.
//   - Token writes TokenPrefix and 16 lowercase base32 characters of
//     HMAC-SHA256(TokenKey, value): equal values give equal tokens under one
//     key, so joins and GROUP BY still work; another key gives unrelated
//     tokens. A span and a whole value with the same bytes get the same
//     token. Values are not normalised ("A@x.io" and "a@x.io" differ).
//   - A span made only of digits in a numeric position (the whole value, a
//     JSON number, a CSV field, an array element: see numericContext) gets
//     digits so the text still parses as a number: redact writes "0", keep
//     writes '9' for masked digits ("999999999999" + "4242"), token writes
//     '9' and digits of the HMAC with the span's length. No card issuer or
//     SSN area starts with 9, so these are never matches themselves.
//
// # Detector precision
//
// Detectors favour precision on machine data (ids, dates, hashes, UUIDs)
// while catching the usual printed forms. A number never matches inside a
// longer run of letters or digits, nor when a dash, dot or slash and a
// digit continue it on either side (dates, versions, decimals, longer ids).
// JSON and COPY escapes (\n, \t, \u00e9) and %XX count as word breaks.
// Prefixed secrets (jwt, github_token, openai_key, slack_token) never start
// right after '-' or '_', so a prefix inside a longer token run never
// anchors; this also keeps every scan linear in the value length.
//
//   - email: practical local part [A-Za-z0-9._%+-] up to 64 bytes; domain
//     of two or more labels with an alphabetic or xn-- TLD ("a@b" and
//     "user@localhost" do not match); no quoted local parts or IP literals.
//   - ssn: AAA-GG-SSSS; nine bare digits only with Config.SSNBare. Areas
//     000, 666, 9xx, group 00 and serial 0000 are refused.
//   - card: 13-19 digits, contiguous or grouped by single spaces or dashes,
//     Luhn-valid, with a known issuer prefix and length (Visa, Mastercard,
//     Amex, Discover, JCB, Diners, UnionPay). A Luhn-valid id with such a
//     prefix is indistinguishable from a card and is masked.
//   - phone: '+' and 10-15 digits (E.164 or grouped), or NANP with
//     separators or parentheses. Bare digit runs and national formats
//     without '+' outside NANP ("020 7946 0958") are not matched; mask such
//     columns by lineage (AppendWhole) instead.
//   - iban: uppercase, contiguous or in groups of four, country length table
//     (SEPA, GB and other common IBAN countries), mod-97 checked.
//   - jwt: compact JWS (3 segments, signature may be empty) or JWE (5)
//     whose header decodes to a JSON object with "alg".
//   - aws_key: AKIA/ASIA access key ids; 40-byte secret keys only right
//     after aws_secret_access_key / SecretAccessKey / aws_secret_key.
//   - github_token: gh[pousr]_ with 36+ base62 characters, github_pat_.
//   - openai_key: sk- with a 32+ character body mixing character classes
//     (also matches other vendors' sk- keys, such as sk-ant-...).
//   - slack_token: xox[abeprs]-, xoxe.xoxp-, xapp- tokens; incoming webhook
//     URLs (the part from hooks.slack.com on).
//   - private_key: PEM blocks whose label holds "PRIVATE KEY", through the
//     matching END line, or up to the first byte that cannot belong to the
//     block (or the end of the value) if unterminated.
//
// Detection works on the bytes as sent. Text that is encoded further (base64,
// hex, \u escapes inside a number, bytea escape or hex format, binary
// result format) is not decoded; binary-format values cannot be masked in
// place and need a type-correct substitute (or NULL) chosen by the caller.
package masking
