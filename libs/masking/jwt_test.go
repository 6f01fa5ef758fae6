package masking

import (
	"encoding/base64"
	"testing"
)

func TestJWT(t *testing.T) {
	const sig = "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
	hs := jwtOf(`{"alg":"HS256","typ":"JWT"}`, `{"sub":"1234567890","name":"Jane"}`, sig)
	spaced := jwtOf(`{ "typ": "JWT", "alg": "RS256" }`, `{"sub":"x"}`, sig)
	none := jwtOf(`{"alg":"none"}`, `{"sub":"x"}`, "")
	kidFirst := jwtOf(`{"kid":"k1","alg":"ES256"}`, `{"sub":"x"}`, sig)
	jwe := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"dir","enc":"A256GCM"}`)) + "..aXY.Y2lwaGVy.dGFn"
	noAlg := jwtOf(`{"typ":"JWT","kid":"k"}`, `{"sub":"x"}`, sig)
	notJSON := base64.RawURLEncoding.EncodeToString([]byte("eyes only, not json")) + ".cGF5.c2ln"
	arrayHdr := jwtOf(`["alg","HS256"]`, `{}`, sig)
	m := only(t, Config{}, JWT)
	runDetCases(t, m, []detCase{
		{"hs256", hs, []string{hs}},
		{"bearer", "Authorization: Bearer " + hs, []string{hs}},
		{"whitespace header", spaced, []string{spaced}},
		{"alg none empty signature", none, []string{none}},
		{"alg not first", kidFirst, []string{kidFirst}},
		{"jwe", jwe, []string{jwe}},
		{"in json", `{"token":"` + hs + `"}`, []string{hs}},
		{"query string", "https://x.io/cb?id_token=" + hs + "&state=1", []string{hs}},
		{"sentence end", "token " + hs + ". Next", []string{hs}},
		{"two", hs + " " + none, []string{hs, none}},
		// near misses
		{"no alg", noAlg, nil},
		{"header not json", notJSON, nil},
		{"array header", arrayHdr, nil},
		{"two segments", hs[:len(hs)-len(sig)-1], nil},
		{"base64 blob", "eyJhbGciOiJIUzI1NiJ9", nil},
		{"inside word", "x" + hs, nil},
		{"plain words", "eyes.only.please", nil},
		{"version", "eyJ1.2.3", nil},
	})
}
