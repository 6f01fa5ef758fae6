package masking

import "testing"

func TestPrivateKey(t *testing.T) {
	const (
		rsa     = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo\n4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u\n-----END RSA PRIVATE KEY-----"
		pkcs8   = "-----BEGIN PRIVATE KEY-----\r\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\r\n-----END PRIVATE KEY-----"
		escaped = `-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nBG5vbmU=\n-----END OPENSSH PRIVATE KEY-----`
		legacy  = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,5A1B2C3D4E5F60718293A4B5C6D7E8F9\n\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----"
		trunc   = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIIrYSSNQFaA2Hwf1duRSxKtLYX5CB04fSeQ6tF1aY/PuoAoGCCqGSM49"
	)
	m := only(t, Config{}, PrivateKey)
	runDetCases(t, m, []detCase{
		{"rsa", rsa, []string{rsa}},
		{"rsa trailing newline", rsa + "\n", []string{rsa}},
		{"pkcs8 crlf", pkcs8, []string{pkcs8}},
		{"json escaped", `{"key":"` + escaped + `","id":1}`, []string{escaped}},
		{"encrypted legacy headers", legacy, []string{legacy}},
		{"embedded", "config:\n" + rsa + "\nend", []string{rsa}},
		{"unterminated", trunc, []string{trunc}},
		{"unterminated row end", trunc + "\n", []string{trunc}},
		{"unterminated json", `{"k":"` + trunc[:40] + `"}`, []string{trunc[:40]}},
		{"unterminated copy", "1\t" + `-----BEGIN PRIVATE KEY-----\nMIIEvQ` + "\t2\n", []string{`-----BEGIN PRIVATE KEY-----\nMIIEvQ`}},
		{"mismatched end", "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END CERTIFICATE-----", []string{"-----BEGIN PRIVATE KEY-----\nMIIE"}},
		// near misses
		{"certificate", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----", nil},
		{"public key", "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----", nil},
		{"prose", "the -----BEGIN marker", nil},
	})
}
