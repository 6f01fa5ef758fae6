package masking

const maxCardGroups = 6

// matchCard matches a payment card number starting at v[i] (a digit at a
// number start): 13-19 digits, contiguous or in groups split by single
// spaces or single dashes (one separator kind per number; groups of four
// with a shorter last group, or the 4-6-5 / 4-6-4 Amex and Diners layout),
// with a known issuer prefix and length, and a valid Luhn check digit.
// A space-separated number may be followed by more space-separated digits
// ("4111 1111 1111 1111 12/27"); a contiguous or dashed one may not.
func matchCard(v []byte, i int) (int, bool) {
	if len(v)-i < 13 || !isDigit(v[i+1]) {
		return 0, false
	}
	var (
		d     [19]byte
		glen  [maxCardGroups]int
		gend  [maxCardGroups]int
		n, ng int
		sep   byte
		more  bool // digits continue past the last collected group
	)
	j := i
	for {
		gs := j
		for j < len(v) && isDigit(v[j]) {
			if n == len(d) {
				more = true
				break
			}
			d[n] = v[j] - '0'
			n++
			j++
		}
		if more {
			if ng == 0 {
				return 0, false // one run of 20+ digits
			}
			n -= j - gs
			break
		}
		glen[ng], gend[ng] = j-gs, j
		ng++
		if j+1 >= len(v) || !isDigit(v[j+1]) || (v[j] != ' ' && v[j] != '-') {
			break
		}
		if sep == 0 {
			sep = v[j]
		} else if v[j] != sep {
			more = true
			break
		}
		if ng == maxCardGroups {
			more = true
			break
		}
		j++
	}
	total := n
	for k := ng; k >= 1; k-- {
		if k < ng {
			total -= glen[k]
		}
		if k == ng && !more {
			if !digitEnd(v, gend[k-1]) {
				continue
			}
		} else if v[gend[k-1]] != ' ' {
			continue // only a space may separate a card from more digits
		}
		if total < 13 || total > 19 || !cardGroups(glen[:k]) {
			continue
		}
		if cardValid(d[:total]) {
			return gend[k-1], true
		}
	}
	return 0, false
}

// cardGroups accepts one contiguous run, 4-4-...-(1..4) and the 4-6-5 /
// 4-6-4 layouts.
func cardGroups(g []int) bool {
	if len(g) == 1 {
		return true
	}
	if len(g) == 3 && g[0] == 4 && g[1] == 6 && (g[2] == 5 || g[2] == 4) {
		return true
	}
	for _, l := range g[:len(g)-1] {
		if l != 4 {
			return false
		}
	}
	last := g[len(g)-1]
	return last >= 1 && last <= 4
}

// cardValid checks the issuer prefix, its lengths and the Luhn sum.
// d holds digit values (0-9), not ASCII.
func cardValid(d []byte) bool {
	return cardIssuer(d) && luhn(d)
}

func cardIssuer(d []byte) bool {
	n := len(d)
	p2 := int(d[0])*10 + int(d[1])
	p3 := p2*10 + int(d[2])
	p4 := p3*10 + int(d[3])
	switch {
	case d[0] == 4: // Visa
		return n == 13 || n == 16 || n == 19
	case p2 >= 51 && p2 <= 55, p4 >= 2221 && p4 <= 2720: // Mastercard
		return n == 16
	case p2 == 34, p2 == 37: // Amex
		return n == 15
	case p4 == 6011, p2 == 65, p3 >= 644 && p3 <= 649: // Discover
		return n >= 16
	case p4 >= 3528 && p4 <= 3589: // JCB
		return n >= 16
	case p3 >= 300 && p3 <= 305, p2 == 36, p2 == 38: // Diners
		return n >= 14
	case p2 == 62: // UnionPay
		return n >= 16
	}
	return false
}

func luhn(d []byte) bool {
	sum := 0
	dbl := false
	for k := len(d) - 1; k >= 0; k-- {
		x := int(d[k])
		if dbl {
			x *= 2
			if x > 9 {
				x -= 9
			}
		}
		sum += x
		dbl = !dbl
	}
	return sum%10 == 0
}
