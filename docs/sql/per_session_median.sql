-- Per session: the median of the clocksource_switch chain's switch_entry -> first_read segment,
-- over the runs clockpath's outlier rule keeps (what `clockpath analyze` reports as the first
-- column's median and `runs - rejected`). Parameters: $path (Parquet file or glob), $k (sigma,
-- clockpath's default 3). Durations in ns.
--
-- The rule: a run is kept when it is the median run (sorted[(n-1)/2] or sorted[n/2]) or lies
-- within k sample standard deviations of the median.
WITH runs AS (
    SELECT session_id, delta_chain_id,
           CAST(min(timestamp_ns) FILTER (WHERE probe_name = 'first_read')   AS BIGINT)
         - CAST(min(timestamp_ns) FILTER (WHERE probe_name = 'switch_entry') AS BIGINT) AS seg_ns
    FROM read_parquet($path)
    WHERE chain = 'clocksource_switch'
    GROUP BY session_id, delta_chain_id
    HAVING seg_ns IS NOT NULL AND seg_ns >= 0
),
scored AS (
    SELECT session_id, seg_ns,
           median(seg_ns)               OVER w AS m,
           stddev_samp(seg_ns)          OVER w AS sd,
           quantile_disc(seg_ns, 0.5)   OVER w AS mid_lo,
           -quantile_disc(-seg_ns, 0.5) OVER w AS mid_hi
    FROM runs
    WINDOW w AS (PARTITION BY session_id)
)
SELECT session_id, count(*) AS kept, median(seg_ns) AS median_ns
FROM scored
WHERE seg_ns = mid_lo OR seg_ns = mid_hi OR abs(seg_ns - m) <= $k * coalesce(sd, 0)
GROUP BY session_id
ORDER BY session_id;
