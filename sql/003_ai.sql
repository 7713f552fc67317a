-- 003: AI providers and models. A model names its providers in fallback order; an
-- ai.chat job tries them in turn. Prices are integers: micro-units of the currency per
-- token (30 = 0.00003 per token), never floats. A provider's API key is not stored: only a
-- reference (`env:NAME`) that each worker resolves from its own environment.
CREATE TABLE ai_providers (
    name               text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9._-]{1,64}$'),
    base_url           text NOT NULL CHECK (base_url ~ '^https?://'),
    api_key_ref        text CHECK (api_key_ref IS NULL OR api_key_ref ~ '^env:[A-Za-z_][A-Za-z0-9_]*$'),
    -- at most rate_limit requests in any rate_window_ms, across every worker (0: none)
    rate_limit         integer NOT NULL DEFAULT 0 CHECK (rate_limit >= 0),
    rate_window_ms     integer NOT NULL DEFAULT 60000 CHECK (rate_window_ms BETWEEN 100 AND 3600000),
    timeout_ms         integer NOT NULL DEFAULT 60000 CHECK (timeout_ms BETWEEN 100 AND 600000),
    connect_timeout_ms integer NOT NULL DEFAULT 5000 CHECK (connect_timeout_ms BETWEEN 10 AND 60000),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ai_models (
    id                 text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9._:/-]{1,128}$'),
    display_name       text NOT NULL,
    providers          text[] NOT NULL CHECK (cardinality(providers) BETWEEN 1 AND 8),
    upstream_model     text,              -- the name sent to the provider (NULL: id)
    status             text NOT NULL DEFAULT 'available'
                       CHECK (status IN ('available', 'deprecated', 'disabled')),
    max_tokens         integer NOT NULL CHECK (max_tokens > 0),
    input_price_micros bigint NOT NULL DEFAULT 0 CHECK (input_price_micros >= 0),
    output_price_micros bigint NOT NULL DEFAULT 0 CHECK (output_price_micros >= 0),
    currency           text NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
