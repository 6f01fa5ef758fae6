package dev

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"

	"sluice.dev/sluice/libs/pglocal"
)

// demoSchema creates the demo database's tables and sample data.
const demoSchema = `
CREATE TABLE customers (
  id          serial PRIMARY KEY,
  name        text NOT NULL,
  email       text NOT NULL,
  ssn         text NOT NULL,
  card_number text NOT NULL,
  phone       text NOT NULL,
  iban        text,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
  id          serial PRIMARY KEY,
  customer_id int NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
  amount      numeric(10,2) NOT NULL,
  status      text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE VIEW customer_orders AS
  SELECT c.id, c.name, c.email, o.amount, o.status FROM customers c JOIN orders o ON o.customer_id = c.id;
`

var firstNames = []string{"Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "John", "Margaret", "Ken", "Radia", "Dennis", "Shafi", "Leslie", "Sophie", "Tim"}
var lastNames = []string{"Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "McCarthy", "Hamilton", "Thompson", "Perlman", "Ritchie", "Goldwasser", "Lamport", "Wilson", "Berners-Lee"}

// luhn completes a 15-digit prefix with its check digit.
func luhn(prefix string) string {
	sum := 0
	for i := len(prefix) - 1; i >= 0; i-- {
		d := int(prefix[i] - '0')
		if (len(prefix)-i)%2 == 1 {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
	}
	return prefix + fmt.Sprint((10-sum%10)%10)
}

func demoRows() string {
	var b strings.Builder
	b.WriteString("INSERT INTO customers (name, email, ssn, card_number, phone, iban) VALUES\n")
	n := 0
	for i, f := range firstNames {
		for j := 0; j < 4; j++ {
			l := lastNames[(i+j*3)%len(lastNames)]
			if n > 0 {
				b.WriteString(",\n")
			}
			n++
			email := strings.ToLower(fmt.Sprintf("%s.%s%d@example.com", f, strings.ReplaceAll(l, "-", ""), n))
			ssn := fmt.Sprintf("%03d-%02d-%04d", 100+n*7%600, 10+n%89, 1000+n*37%9000)
			card := luhn(fmt.Sprintf("4%014d", 111111111111+int64(n)*7919))
			phone := fmt.Sprintf("+1-415-555-%04d", 100+n*13%9000)
			iban := ""
			if n%3 == 0 {
				iban = "'DE89370400440532013000'"
			} else {
				iban = "NULL"
			}
			fmt.Fprintf(&b, "  ('%s %s', '%s', '%s', '%s', '%s', %s)", f, l, email, ssn, card, phone, iban)
		}
	}
	b.WriteString(";\n")
	b.WriteString(`INSERT INTO orders (customer_id, amount, status)
  SELECT 1 + (g % 64), round((random() * 500)::numeric, 2), (ARRAY['paid','shipped','refunded'])[1 + g % 3]
  FROM generate_series(1, 200) g;
`)
	return b.String()
}

func randomPassword() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// setupDemo creates the gateway role and the demo database on a fresh server.
func setupDemo(ctx context.Context, pg *pglocal.Server, password string) error {
	steps := []struct{ db, sql string }{
		{"postgres", fmt.Sprintf("CREATE ROLE sluice_gateway LOGIN PASSWORD '%s'", password)},
		{"postgres", "CREATE DATABASE demo OWNER sluice_gateway"},
		{"demo", "SET ROLE sluice_gateway;" + demoSchema + demoRows()},
	}
	for _, s := range steps {
		if err := pg.Exec(ctx, s.db, s.sql); err != nil {
			return fmt.Errorf("demo database: %w", err)
		}
	}
	return nil
}
