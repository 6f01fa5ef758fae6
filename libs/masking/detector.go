package masking

// Detector names, as used in Config.Detectors and reported by Counts.
const (
	Email       = "email"
	SSN         = "ssn"
	Card        = "card"
	Phone       = "phone"
	IBAN        = "iban"
	JWT         = "jwt"
	AWSKey      = "aws_key"
	GitHubToken = "github_token"
	OpenAIKey   = "openai_key"
	SlackToken  = "slack_token"
	PrivateKey  = "private_key"
)

// detID indexes the detectors; the order is the stable reporting order.
type detID uint8

const (
	detEmail detID = iota
	detSSN
	detCard
	detPhone
	detIBAN
	detJWT
	detAWS
	detGitHub
	detOpenAI
	detSlack
	detPEM
	numDetectors
)

var detNames = [numDetectors]string{
	detEmail:  Email,
	detSSN:    SSN,
	detCard:   Card,
	detPhone:  Phone,
	detIBAN:   IBAN,
	detJWT:    JWT,
	detAWS:    AWSKey,
	detGitHub: GitHubToken,
	detOpenAI: OpenAIKey,
	detSlack:  SlackToken,
	detPEM:    PrivateKey,
}

// Detectors returns every detector name in stable order.
func Detectors() []string {
	out := make([]string, numDetectors)
	copy(out, detNames[:])
	return out
}

func detByName(name string) (detID, bool) {
	for i, n := range detNames {
		if n == name {
			return detID(i), true
		}
	}
	return 0, false
}

// span is one match: v[start:end] detected by det.
type span struct {
	start, end int
	det        detID
}
