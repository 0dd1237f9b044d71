package chanfile

import (
	"os"
	"strings"
)

// Pair is one "key value" line.
type Pair struct{ Key, Value string }

// Pairs are the lines of a key-value file in file order.
type Pairs []Pair

// Parse reads "key value" lines: the key is the first word, the value the
// rest of the line, trimmed. Blank lines are skipped.
func Parse(b []byte) Pairs {
	var out Pairs
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), " ")
		if k == "" {
			continue
		}
		out = append(out, Pair{Key: k, Value: strings.TrimSpace(v)})
	}
	return out
}

// ReadFile reads and parses a key-value file.
func ReadFile(path string) (Pairs, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(b), nil
}

// Map returns the pairs as a map; a repeated key keeps its last value.
func (p Pairs) Map() map[string]string {
	m := make(map[string]string, len(p))
	for _, kv := range p {
		m[kv.Key] = kv.Value
	}
	return m
}

// Get returns the last value of key.
func (p Pairs) Get(key string) (string, bool) {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i].Key == key {
			return p[i].Value, true
		}
	}
	return "", false
}
