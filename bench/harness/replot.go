package harness

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Replot redraws the PNG plots and the tables (results.md) of a results
// directory from its results.json, without running anything.
func Replot(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		return err
	}
	var rep Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(dir, "results.json"), err)
	}
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(rep.Markdown()), 0o644); err != nil {
		return err
	}
	return rep.plot(dir)
}
