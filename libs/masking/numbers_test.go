package masking

import "testing"

func TestSSN(t *testing.T) {
	m := only(t, Config{}, SSN)
	runDetCases(t, m, []detCase{
		{"dashed", "123-45-6789", []string{"123-45-6789"}},
		{"in text", "SSN: 078-05-1120.", []string{"078-05-1120"}},
		{"in json", `{"ssn":"219-09-9999"}`, []string{"219-09-9999"}},
		{"copy line", "7\t219-09-9999\t\\N\n", []string{"219-09-9999"}},
		{"two", "123-45-6789/234-56-7890", nil}, // slash-joined numbers are one id
		{"two spaced", "123-45-6789 234-56-7890", []string{"123-45-6789", "234-56-7890"}},
		{"area 000", "000-12-3456", nil},
		{"area 666", "666-12-3456", nil},
		{"area 9xx", "912-34-5678", nil},
		{"group 00", "123-00-4567", nil},
		{"serial 0000", "123-45-0000", nil},
		{"bare off by default", "123456789", nil},
		{"longer dashed id", "123-45-6789-01", nil},
		{"prefixed id", "9-123-45-6789", nil},
		{"inside token", "A123-45-6789", nil},
		{"trailing letter", "123-45-6789x", nil},
		{"date", "2024-01-01", nil},
		{"spaces", "123 45 6789", nil},
	})
	bare := only(t, Config{SSNBare: true}, SSN)
	runDetCases(t, bare, []detCase{
		{"bare", "ssn=123456789", []string{"123456789"}},
		{"bare in csv", "1,123456789,x", []string{"123456789"}},
		{"bare invalid area", "000123456", nil},
		{"ten digits", "1234567890", nil},
		{"decimal", "0.123456789", nil},
		{"json exponent", "0e+001010001", nil},
	})
}

func TestCard(t *testing.T) {
	m := only(t, Config{}, Card)
	runDetCases(t, m, []detCase{
		{"visa", "4111111111111111", []string{"4111111111111111"}},
		{"visa 13", "card 4222222222222 ok", []string{"4222222222222"}},
		{"visa spaced", "4111 1111 1111 1111", []string{"4111 1111 1111 1111"}},
		{"visa dashed", "4012-8888-8888-1881", []string{"4012-8888-8888-1881"}},
		{"mastercard", "5555555555554444", []string{"5555555555554444"}},
		{"mastercard 2-series", "2223003122003222", []string{"2223003122003222"}},
		{"amex 4-6-5", "3782 822463 10005", []string{"3782 822463 10005"}},
		{"amex", "371449635398431", []string{"371449635398431"}},
		{"discover", "6011111111111117", []string{"6011111111111117"}},
		{"discover 65", "6500000000000002", []string{"6500000000000002"}},
		{"jcb", "3530111333300000", []string{"3530111333300000"}},
		{"diners 14", "30569309025904", []string{"30569309025904"}},
		{"diners 4-6-4", "3056 930902 5904", []string{"3056 930902 5904"}},
		{"unionpay", "6200000000000005", []string{"6200000000000005"}},
		{"in json", `{"card":"4111111111111111"}`, []string{"4111111111111111"}},
		{"json number", `{"card": 4111111111111111}`, []string{"4111111111111111"}},
		{"csv", "1,4111111111111111,12/27", []string{"4111111111111111"}},
		{"copy line", "1\t4111 1111 1111 1111\t\\N\n", []string{"4111 1111 1111 1111"}},
		{"followed by expiry", "4111 1111 1111 1111 12/27", []string{"4111 1111 1111 1111"}},
		{"after json newline escape", `"paid with\n4111111111111111"`, []string{"4111111111111111"}},
		{"two", "4111111111111111 and 5555555555554444", []string{"4111111111111111", "5555555555554444"}},
		// near misses
		{"luhn invalid", "4111111111111112", nil},
		{"order id failing luhn", "order 1234567812345678", nil},
		{"unknown issuer", "9111111111111111", nil},
		{"visa wrong length", "41111111111111111", nil},
		{"inside longer run", "12345678904111111111111111", nil},
		{"run continues", "41111111111111110", nil},
		{"alnum prefix", "x4111111111111111", nil},
		{"alnum suffix", "4111111111111111x", nil},
		{"decimal", "0.4111111111111111", nil},
		{"decimal tail", "4111111111111111.25", nil},
		{"exponent", "1E-4111111111111111", nil},
		{"inside percent escape", "q=%24111111111111111", nil},
		{"after percent escape", "q=%244111111111111111", []string{"4111111111111111"}},
		{"dashed id continues", "4111-1111-1111-1111-2222", nil},
		{"mixed separators", "4111 1111-1111 1111", nil},
		{"double space", "4111  1111  1111  1111", nil},
		{"odd grouping", "41 1111 1111 1111 11", nil},
		{"hex hash", "d41d8cd98f00b204e9800998ecf8427e", nil},
		{"uuid", "123e4567-e89b-12d3-a456-426614174000", nil},
		{"unix millis", "1700000000000", nil},
	})
}

func TestPhone(t *testing.T) {
	m := only(t, Config{}, Phone)
	runDetCases(t, m, []detCase{
		{"e164", "+14155552671", []string{"+14155552671"}},
		{"e164 uk", "tel:+442079460958", []string{"+442079460958"}},
		{"intl spaced", "+44 20 7946 0958", []string{"+44 20 7946 0958"}},
		{"intl trunk", "+44 (0) 20 7946 0958", []string{"+44 (0) 20 7946 0958"}},
		{"intl nanp", "+1 (415) 555-2671", []string{"+1 (415) 555-2671"}},
		{"intl dashed", "+1-415-555-2671", []string{"+1-415-555-2671"}},
		{"france", "+33 1 23 45 67 89", []string{"+33 1 23 45 67 89"}},
		{"germany", "+49 30 12345678", []string{"+49 30 12345678"}},
		{"india", "+91 98765 43210", []string{"+91 98765 43210"}},
		{"nanp parens", "(415) 555-2671", []string{"(415) 555-2671"}},
		{"nanp parens no space", "(415)555-2671", []string{"(415)555-2671"}},
		{"nanp dashed", "call 415-555-2671 now", []string{"415-555-2671"}},
		{"nanp dots", "415.555.2671", []string{"415.555.2671"}},
		{"nanp spaces", "415 555 2671", []string{"415 555 2671"}},
		{"nanp with 1", "1-800-555-0199", []string{"1-800-555-0199"}},
		{"nanp with 1 parens", "1 (800) 555-0199", []string{"1 (800) 555-0199"}},
		{"json", `{"phone":"+14155552671"}`, []string{"+14155552671"}},
		{"copy line", "3\t(415) 555-2671\t\\N\n", []string{"(415) 555-2671"}},
		{"then text", "+1 415 555 2671 (mobile)", []string{"+1 415 555 2671"}},
		{"two", "415-555-2671, +44 20 7946 0958", []string{"415-555-2671", "+44 20 7946 0958"}},
		// near misses
		{"date", "2024-01-01", nil},
		{"datetime", "2024-01-01 12:30:45", nil},
		{"bare ten digits", "4155552671", nil},
		{"too short", "+1 415 555", nil},
		{"e164 too short", "+123456789", nil},
		{"e164 too long", "+1234567890123456", nil},
		{"longer run", "415-555-26710", nil},
		{"continued", "415-555-2671-9", nil},
		{"area starts with 1", "(123) 456-7890", nil},
		{"exchange starts with 0", "415-055-2671", nil},
		{"mixed separators", "415-555.2671", nil},
		{"ip address", "192.168.100.200", nil},
		{"version", "v1.415.555.2671", nil},
		{"inside token", "x415-555-2671", nil},
		{"plus inside number", "1+14155552671", nil},
		{"uuid", "550e8400-e29b-41d4-a716-446655440000", nil},
		{"timezone", "+05:30", nil},
	})
}

// TestDigitOverlap runs all number detectors together: each value is
// claimed by exactly one, and runs never match piecewise.
func TestDigitOverlap(t *testing.T) {
	m := only(t, Config{SSNBare: true}, SSN, Card, Phone)
	runDetCases(t, m, []detCase{
		{"card not phone", "4111111111111111", []string{"4111111111111111"}},
		{"ssn not phone", "123-45-6789", []string{"123-45-6789"}},
		{"bare ssn inside card run", "1234567894111111111111111", nil},
		{"twenty digits", "41111111111111111111", nil},
		{"card then ssn", "4111111111111111 123-45-6789 (415) 555-2671", []string{"4111111111111111", "123-45-6789", "(415) 555-2671"}},
	})
}
