package approvalstate

import "unicode/utf8"

// SlackCardRunes is as much of a command as a Slack card shows (a section
// holds 3,000 characters in all).
const SlackCardRunes = 2000

// FitsSlackCard reports whether a Slack card shows a's command whole; one
// that does not is approved where it is read whole.
func FitsSlackCard(a interface {
	GetCommand() string
	GetCommandSize() int64
}) bool {
	return utf8.RuneCountInString(a.GetCommand()) <= SlackCardRunes && a.GetCommandSize() <= int64(len(a.GetCommand()))
}
