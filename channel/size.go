package channel

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ParseSize reads a byte count: a decimal number with an optional suffix K,
// M or G, powers of 1024 (1M = 1<<20). Lower case and the forms "KB" and
// "KiB" are accepted too. It is the one size syntax of the ctl file, the
// CLI flags and the benchmark. Errors wrap ErrConfig.
func ParseSize(s string) (uint64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "b"), "i")
	shift := 0
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k':
			shift = 10
		case 'm':
			shift = 20
		case 'g':
			shift = 30
		}
		if shift != 0 {
			t = t[:n-1]
		}
	}
	n, err := strconv.ParseUint(t, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: size %q (want a number with an optional K, M or G suffix)", ErrConfig, s)
	}
	if n > math.MaxUint64>>shift {
		return 0, fmt.Errorf("%w: size %q overflows 64 bits", ErrConfig, s)
	}
	return n << shift, nil
}

// FormatSize prints n with the largest suffix (G, M, K) that divides it
// exactly, so that ParseSize(FormatSize(n)) == n: 4096 is "4K", 1000 is "1000".
func FormatSize(n uint64) string {
	for _, u := range []struct {
		shift  uint
		suffix string
	}{{30, "G"}, {20, "M"}, {10, "K"}} {
		if n != 0 && n%(1<<u.shift) == 0 {
			return strconv.FormatUint(n>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatUint(n, 10)
}
