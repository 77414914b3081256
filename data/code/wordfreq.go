// Command wordfreq counts how often each word appears in its input and prints the most
// common ones.
//
// Usage:
//
//	wordfreq [-n 10] [-min 3] < book.txt
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"unicode"
)

// Count is one word and how many times it was seen.
type Count struct {
	Word string
	N    int
}

// Counter tallies words, folding case and ignoring words shorter than MinLen.
type Counter struct {
	MinLen int
	counts map[string]int
	total  int
}

// NewCounter returns an empty counter.
func NewCounter(minLen int) *Counter {
	return &Counter{MinLen: minLen, counts: make(map[string]int)}
}

// Add splits a line into words and counts each one.
func (c *Counter) Add(line string) {
	words := strings.FieldsFunc(line, func(r rune) bool {
		return !unicode.IsLetter(r) && r != '\''
	})
	for _, w := range words {
		w = strings.ToLower(strings.Trim(w, "'"))
		if len([]rune(w)) < c.MinLen {
			continue
		}
		c.counts[w]++
		c.total++
	}
}

// Top returns the n most frequent words, most frequent first; ties are broken
// alphabetically so the output is stable.
func (c *Counter) Top(n int) []Count {
	all := make([]Count, 0, len(c.counts))
	for w, k := range c.counts {
		all = append(all, Count{Word: w, N: k})
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].N != all[j].N {
			return all[i].N > all[j].N
		}
		return all[i].Word < all[j].Word
	})
	if n < len(all) {
		all = all[:n]
	}
	return all
}

// Total is the number of words counted.
func (c *Counter) Total() int {
	return c.total
}

// countReader feeds every line of r to the counter.
func countReader(c *Counter, r io.Reader) error {
	scanner := bufio.NewScanner(r)
	scanner.Buffer(make([]byte, 64*1024), 1024*1024)
	for scanner.Scan() {
		c.Add(scanner.Text())
	}
	return scanner.Err()
}

// printTable writes the counts with a bar scaled to the largest one.
func printTable(w io.Writer, counts []Count, total int) {
	if len(counts) == 0 {
		fmt.Fprintln(w, "no words")
		return
	}
	widest := counts[0].N
	for _, c := range counts {
		bar := strings.Repeat("#", 1+c.N*30/widest)
		share := 100 * float64(c.N) / float64(total)
		fmt.Fprintf(w, "%-16s %6d %5.1f%% %s\n", c.Word, c.N, share, bar)
	}
}

func main() {
	n := flag.Int("n", 10, "how many words to show")
	minLen := flag.Int("min", 3, "ignore words shorter than this")
	flag.Parse()

	counter := NewCounter(*minLen)
	if err := countReader(counter, os.Stdin); err != nil {
		fmt.Fprintln(os.Stderr, "wordfreq:", err)
		os.Exit(1)
	}
	printTable(os.Stdout, counter.Top(*n), counter.Total())
}
