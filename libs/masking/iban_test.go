package masking

import "testing"

func TestIBAN(t *testing.T) {
	m := only(t, Config{}, IBAN)
	runDetCases(t, m, []detCase{
		{"gb spaced", "GB82 WEST 1234 5698 7654 32", []string{"GB82 WEST 1234 5698 7654 32"}},
		{"gb compact", "GB82WEST12345698765432", []string{"GB82WEST12345698765432"}},
		{"de", "IBAN: DE89 3704 0044 0532 0130 00.", []string{"DE89 3704 0044 0532 0130 00"}},
		{"fr with letter", "FR14 2004 1010 0505 0001 3M02 606", []string{"FR14 2004 1010 0505 0001 3M02 606"}},
		{"nl", "NL91ABNA0417164300", []string{"NL91ABNA0417164300"}},
		{"es", "ES9121000418450200051332", []string{"ES9121000418450200051332"}},
		{"it", "IT60X0542811101000000123456", []string{"IT60X0542811101000000123456"}},
		{"be", "BE68 5390 0754 7034", []string{"BE68 5390 0754 7034"}},
		{"ch", "CH93 0076 2011 6238 5295 7", []string{"CH93 0076 2011 6238 5295 7"}},
		{"no shortest", "NO9386011117947", []string{"NO9386011117947"}},
		{"json", `{"iban":"DE89370400440532013000"}`, []string{"DE89370400440532013000"}},
		{"copy line", "1\tGB82WEST12345698765432\t\\N\n", []string{"GB82WEST12345698765432"}},
		{"two", "DE89370400440532013000 / GB82WEST12345698765432", []string{"DE89370400440532013000", "GB82WEST12345698765432"}},
		// near misses
		{"wrong checksum", "GB82 WEST 1234 5698 7654 33", nil},
		{"wrong check digits", "GB00WEST12345698765432", nil},
		{"wrong length for country", "DE8937040044053201300", nil},
		{"too long", "DE890370400440532013000", nil},
		{"unknown country", "ZZ82WEST12345698765432", nil},
		{"lowercase", "gb82west12345698765432", nil},
		{"inside token", "XGB82WEST12345698765432", nil},
		{"trailing alnum", "GB82WEST12345698765432X", nil},
		{"bad grouping", "GB82 WES T1234 5698 7654 32", nil},
		{"plain words", "THE QUICK BROWN FOX", nil},
	})
}
