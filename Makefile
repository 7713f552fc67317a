# Conveyor — one non-recursive Makefile.
#   make            build bin/conveyor
#   make run        install what is missing, build, run everything on 127.0.0.1:8080
#   make check      build, start private Redis + PostgreSQL, run every test
#   make check SAN=1  the same with ASan + UBSan
#   make bench      benchmarks against the references named in the issues

SAN ?= 0
CC ?= gcc
PKGS := hiredis msgpack libpq libcurl libuv jansson libargon2 openssl

ifeq ($(SAN),1)
BUILD := build/san
BIN := bin/conveyor-san
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
OPT := -O1
else
BUILD := build/rel
BIN := bin/conveyor
SANFLAGS :=
OPT := -O2
endif

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CFLAGS += -std=c11 -Wall -Wextra -Werror -Wformat=2 -Wno-format-nonliteral -g $(OPT) \
          $(SANFLAGS) -I. -I$(BUILD)/gen $(PKG_CFLAGS) -MMD -MP -D_GNU_SOURCE
LDFLAGS += $(SANFLAGS)
LDLIBS := $(PKG_LIBS) -lcivetweb -lm -lpthread

COMMON_SRC := $(sort $(wildcard common/*.c))
QUEUE_SRC := queue/queue.c queue/codec.c queue/client.c queue/batch.c
WORKERS_SRC := $(sort $(wildcard workers/*.c))
API_SRC := $(sort $(wildcard api/*.c))
SCHED_SRC := $(sort $(wildcard scheduler/*.c))
SQL_SRC := $(sort $(wildcard sql/*.c))
CLI_SRC := $(sort $(wildcard cli/*.c))
LUA_FILES := $(sort $(wildcard queue/lua/*.lua))
API_LUA_FILES := $(sort $(wildcard api/lua/*.lua))
SQL_FILES := $(sort $(wildcard sql/*.sql))
GEN_SRC := $(BUILD)/gen/lua_scripts.c $(BUILD)/gen/api_lua.c $(BUILD)/gen/sql_migrations.c

LIB_SRC := $(COMMON_SRC) $(QUEUE_SRC) $(WORKERS_SRC) $(API_SRC) $(SCHED_SRC) $(SQL_SRC)
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o) $(GEN_SRC:.c=.o)
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/%.o)

UNIT_SRC := $(sort $(wildcard tests/unit/*/test_*.c))
UNIT_BIN := $(UNIT_SRC:%.c=$(BUILD)/%)

PROVIDER_SRC := $(sort $(wildcard tests/provider/*.c))
PROVIDER_BIN := bin/conveyor-test-provider$(if $(filter 1,$(SAN)),-san,)

.PHONY: all run check bench deps clean unit format
all: $(BIN) $(if $(PROVIDER_SRC),$(PROVIDER_BIN))

# The OpenAI-compatible provider the tests and `make run` talk to (tests/provider/).
$(PROVIDER_BIN): $(PROVIDER_SRC:%.c=$(BUILD)/%.o)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lm

$(BIN): $(CLI_OBJ) $(BUILD)/libconveyor.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libconveyor.a $(LDLIBS)

$(BUILD)/libconveyor.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/gen/%.o: $(BUILD)/gen/%.c
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/gen/lua_scripts.c: $(LUA_FILES) ops/embed.sh
	@mkdir -p $(dir $@)
	ops/embed.sh q_lua_scripts $(LUA_FILES) > $@

$(BUILD)/gen/api_lua.c: $(API_LUA_FILES) ops/embed.sh
	@mkdir -p $(dir $@)
	ops/embed.sh api_lua_scripts $(API_LUA_FILES) > $@

$(BUILD)/gen/sql_migrations.c: $(SQL_FILES) ops/embed.sh
	@mkdir -p $(dir $@)
	ops/embed.sh sql_migrations $(SQL_FILES) > $@

$(BUILD)/tests/unit/%: tests/unit/%.c $(BUILD)/libconveyor.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libconveyor.a $(LDLIBS) -lcmocka

unit: $(UNIT_BIN)

deps:
	@ops/deps.sh

run:
	@ops/deps.sh
	@$(MAKE) --no-print-directory all
	@ops/run.sh

check:
	@ops/deps.sh --test
	@$(MAKE) --no-print-directory all unit
	@BIN=$(BIN) SAN=$(SAN) UNIT_TESTS="$(UNIT_BIN)" ops/check.sh

bench:
	@ops/deps.sh --bench
	@$(MAKE) --no-print-directory all
	@BIN=$(BIN) ops/bench.sh

format:
	clang-format -i $(LIB_SRC) $(CLI_SRC) $(UNIT_SRC) $(wildcard */*.h)

clean:
	rm -rf build bin

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(PROVIDER_SRC:%.c=$(BUILD)/%.d)
