package servertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyhole-dev/keyhole/server/pgstore"
)

// Postgres is a throwaway PostgreSQL cluster started from the machine's
// server binaries (initdb, pg_ctl) in a temp dir, listening only on a unix
// socket in that dir. Run as root, it runs as the postgres user (through
// runuser), since PostgreSQL refuses to run as root. Tests get a database
// each (Database); one cluster serves a whole test package.
type Postgres struct {
	dir    string // data dir and socket dir live under it
	socket string // the socket dir
	run    []string
	bin    string
	admin  string // URL of the postgres database, for CREATE DATABASE
	n      int
	mu     sync.Mutex
}

// PostgresOptions tunes a cluster.
type PostgresOptions struct {
	// Durable keeps fsync on (benchmarks of commit latency); tests run
	// with fsync off, which changes nothing a client can observe short of
	// the machine crashing.
	Durable bool
}

var (
	pgOnce    sync.Once
	pgShared  *Postgres
	pgErr     error
	pgStopped bool
)

// ErrNoPostgres says no PostgreSQL server could be started here.
var ErrNoPostgres = errors.New("servertest: no PostgreSQL server binaries (initdb, pg_ctl) found; install the postgresql package")

// PostgresURL returns the URL of a new, empty database in the test
// package's cluster, started on first use. Where no PostgreSQL can be
// started the test is skipped with a loud message, except under CI
// (CI=true), where that fails the test: CI must run these tests. The
// package's TestMain must call StopPostgres after m.Run (see
// MainWithPostgres).
func PostgresURL(t testing.TB) string {
	t.Helper()
	pgOnce.Do(func() { pgShared, pgErr = StartPostgres(PostgresOptions{}) })
	if pgErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL is required in CI and could not be started: %v", pgErr)
		}
		t.Skipf("\n\n!!!!!!!! SKIPPED: no PostgreSQL could be started here (%v).\n!!!!!!!! The PostgreSQL tests did NOT run. Install it: apt-get install -y postgresql\n\n", pgErr)
	}
	u, err := pgShared.Database()
	if err != nil {
		t.Fatalf("create a test database: %v", err)
	}
	return u
}

// MainWithPostgres runs a test package whose tests use PostgresURL and
// stops its cluster afterwards: func TestMain(m *testing.M) { os.Exit(servertest.MainWithPostgres(m)) }.
func MainWithPostgres(m *testing.M) int {
	code := m.Run()
	StopPostgres()
	return code
}

// StopPostgres stops the package's cluster, if one was started.
func StopPostgres() {
	if pgShared != nil && !pgStopped {
		pgStopped = true
		pgShared.Stop()
	}
}

// findPG returns the directory holding initdb and pg_ctl.
func findPG() (string, error) {
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", ErrNoPostgres
}

func version(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// StartPostgres initializes and starts a cluster in a new temp dir. Stop
// removes it.
func StartPostgres(o PostgresOptions) (*Postgres, error) {
	bin, err := findPG()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "keyhole-pg-")
	if err != nil {
		return nil, err
	}
	p := &Postgres{dir: dir, bin: bin, socket: filepath.Join(dir, "run")}
	if err := os.Mkdir(p.socket, 0o700); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if os.Geteuid() == 0 {
		// PostgreSQL will not run as root: hand the dir to postgres.
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("servertest: running as root and there is no postgres user to run PostgreSQL as: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, d := range []string{dir, p.socket} {
			if err := os.Chown(d, uid, gid); err != nil {
				os.RemoveAll(dir)
				return nil, err
			}
		}
		// The temp dir's parent must let postgres through.
		os.Chmod(dir, 0o700)
		p.run = []string{"runuser", "-u", "postgres", "--"}
	}
	data := filepath.Join(dir, "data")
	if out, err := p.cmd("initdb", "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "--locale=C").CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("servertest: initdb: %v\n%s", err, out)
	}
	fsync := "off"
	if o.Durable {
		fsync = "on"
	}
	opts := strings.Join([]string{
		"-c listen_addresses=''",
		"-k " + p.socket,
		"-c fsync=" + fsync,
		"-c full_page_writes=" + fsync,
		"-c max_connections=200",
		"-c shared_buffers=32MB",
	}, " ")
	logFile := filepath.Join(dir, "postgres.log")
	if out, err := p.cmd("pg_ctl", "-D", data, "-l", logFile, "-o", opts, "-w", "-t", "60", "start").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(logFile)
		os.RemoveAll(dir)
		return nil, fmt.Errorf("servertest: pg_ctl start: %v\n%s\n%s", err, out, log)
	}
	p.admin = p.url("postgres")
	return p, nil
}

func (p *Postgres) cmd(name string, args ...string) *exec.Cmd {
	argv := append(append([]string(nil), p.run...), filepath.Join(p.bin, name))
	argv = append(argv, args...)
	c := exec.Command(argv[0], argv[1:]...)
	c.Dir = p.dir
	c.Env = append(os.Environ(), "LC_ALL=C")
	return c
}

// url is the URL of database db over the cluster's unix socket.
func (p *Postgres) url(db string) string {
	q := url.Values{"host": {p.socket}, "sslmode": {"disable"}}
	return "postgres://postgres@/" + db + "?" + q.Encode()
}

// DataDir is the cluster's data directory (its postmaster.pid names the
// server's process).
func (p *Postgres) DataDir() string { return filepath.Join(p.dir, "data") }

// Socket is the directory of the cluster's unix socket.
func (p *Postgres) Socket() string { return p.socket }

// Database creates a new, empty database and returns its URL.
func (p *Postgres) Database() (string, error) {
	p.mu.Lock()
	p.n++
	n := p.n
	p.mu.Unlock()
	var b [4]byte
	rand.Read(b[:])
	name := fmt.Sprintf("t%d_%s", n, hex.EncodeToString(b[:]))
	if err := p.exec("CREATE DATABASE " + name); err != nil {
		return "", err
	}
	return p.url(name), nil
}

// exec runs one SQL statement as the superuser.
func (p *Postgres) exec(sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pgx.Connect(ctx, p.admin)
	if err != nil {
		return fmt.Errorf("servertest: connect to PostgreSQL: %w", err)
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, sql)
	return err
}

// Stop stops the cluster at once and removes its files.
func (p *Postgres) Stop() {
	p.cmd("pg_ctl", "-D", filepath.Join(p.dir, "data"), "-m", "immediate", "-w", "stop").Run()
	os.RemoveAll(p.dir)
}

// MigratedPostgres returns a pool on a new database of the package's
// cluster (PostgresURL) with keyhole's schema applied, closed when the
// test ends.
func MigratedPostgres(t testing.TB) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	db, err := pgstore.Open(ctx, PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if _, err := pgstore.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	return db
}
