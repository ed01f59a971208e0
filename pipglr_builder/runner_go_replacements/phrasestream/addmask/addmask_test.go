package addmask

import (
	"bytes"
	"slices"
	"testing"
)

type memStore struct{ phrases []string }

func (m *memStore) List() ([]string, error) { return slices.Clone(m.phrases), nil }
func (m *memStore) Add(p string) error      { m.phrases = append(m.phrases, p); return nil }

func newTest(t *testing.T, stored ...string) (*AddMask, *memStore, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	store := &memStore{phrases: stored}
	var stdout, stderr bytes.Buffer
	am, err := New(store, &stdout, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	return am, store, &stdout, &stderr
}

func write(t *testing.T, am *AddMask, i int, chunks ...string) {
	t.Helper()
	for _, c := range chunks {
		if n, err := am.Get(i).Write([]byte(c)); err != nil || n != len(c) {
			t.Fatalf("Write(%q) = %d, %v", c, n, err)
		}
	}
}

func expect(t *testing.T, got *bytes.Buffer, want string) {
	t.Helper()
	if got.String() != want {
		t.Errorf("got %q, want %q", got.String(), want)
	}
}

func TestStoredPhrasesAreMasked(t *testing.T) {
	am, _, stdout, stderr := newTest(t, "hunter2")
	write(t, am, 0, "password is hunter2!\n")
	write(t, am, 1, "hunter2hunter2")
	if err := am.Close(); err != nil {
		t.Fatal(err)
	}
	expect(t, stdout, "password is [MASKED]!\n")
	expect(t, stderr, "[MASKED][MASKED]")
}

func TestAddMaskCommand(t *testing.T) {
	am, store, stdout, stderr := newTest(t)
	write(t, am, 0, "before s3cr3t\n", "::add-mask::s3cr3t\n", "after s3cr3t\n")
	write(t, am, 1, "stderr s3cr3t too\n")
	if err := am.Close(); err != nil {
		t.Fatal(err)
	}
	expect(t, stdout, "before s3cr3t\n::add-mask::[MASKED]\nafter [MASKED]\n")
	expect(t, stderr, "stderr [MASKED] too\n")
	if !slices.Equal(store.phrases, []string{"s3cr3t"}) {
		t.Errorf("store has %q", store.phrases)
	}
}

func TestAddMaskCommandOnlyAtLineStart(t *testing.T) {
	am, store, stdout, _ := newTest(t)
	write(t, am, 0, `$ echo "::add-mask::abc"`+"\n", "abc\n")
	_ = am.Close()
	expect(t, stdout, `$ echo "::add-mask::abc"`+"\nabc\n")
	if len(store.phrases) != 0 {
		t.Errorf("store has %q", store.phrases)
	}
}

func TestSplitAcrossWrites(t *testing.T) {
	am, _, stdout, _ := newTest(t)
	// the command, its CRLF ending and a later phrase all arrive in pieces
	write(t, am, 0, "::add", "-mask::tok", "en-123\r", "\nx tok", "en-", "12", "3 y\n")
	_ = am.Close()
	expect(t, stdout, "::add-mask::[MASKED]\r\nx [MASKED] y\n")
}

func TestByteByByte(t *testing.T) {
	am, _, stdout, _ := newTest(t, "secret")
	for _, b := range []byte("a secret, a secre, secret") {
		write(t, am, 0, string(b))
	}
	_ = am.Close()
	expect(t, stdout, "a [MASKED], a secre, [MASKED]")
}

func TestHeldPrefixIsFlushedOnClose(t *testing.T) {
	am, _, stdout, _ := newTest(t, "secret")
	write(t, am, 0, "ends with secr")
	expect(t, stdout, "ends with ")
	_ = am.Close()
	expect(t, stdout, "ends with secr")
}

func TestLongestPhraseWins(t *testing.T) {
	am, _, stdout, _ := newTest(t, "abc", "abcdef")
	write(t, am, 0, "abc", "def abc abcde")
	_ = am.Close()
	expect(t, stdout, "[MASKED] [MASKED] [MASKED]de")
}

func TestEmptyPhraseIgnored(t *testing.T) {
	am, store, stdout, _ := newTest(t)
	write(t, am, 0, "::add-mask::\n", "::add-mask::  \n", "text\n")
	_ = am.Close()
	expect(t, stdout, "::add-mask::\n::add-mask::  \ntext\n")
	if len(store.phrases) != 0 {
		t.Errorf("store has %q", store.phrases)
	}
}
