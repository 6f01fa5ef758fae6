package masking

// Counts holds how many values each detector found. The zero value is
// ready to use; it is a fixed-size array, so counting never allocates.
// A Counts is not safe for concurrent use: keep one per goroutine (per
// connection) and Add them up.
type Counts struct {
	n [numDetectors]int64
}

func (c *Counts) inc(d detID) {
	if c != nil {
		c.n[d]++
	}
}

// Add adds every count of o to c.
func (c *Counts) Add(o *Counts) {
	for i := range c.n {
		c.n[i] += o.n[i]
	}
}

// Reset sets every count to zero.
func (c *Counts) Reset() { c.n = [numDetectors]int64{} }

// Get returns the count for a detector name (0 for an unknown name).
func (c *Counts) Get(name string) int64 {
	if d, ok := detByName(name); ok {
		return c.n[d]
	}
	return 0
}

// Total returns the sum of all counts.
func (c *Counts) Total() int64 {
	var t int64
	for _, n := range c.n {
		t += n
	}
	return t
}

// Each calls fn for every detector with a non-zero count, in the stable
// order of Detectors.
func (c *Counts) Each(fn func(name string, n int64)) {
	for i, n := range c.n {
		if n != 0 {
			fn(detNames[i], n)
		}
	}
}
