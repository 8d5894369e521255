"""Each domain's signals stay physically plausible and follow their daily and weekly rhythms.

All tests read the same clean week (``week``: 20 devices per domain, one reading per 10
minutes, Monday 1 July 2024 onwards) and average over devices and days.
"""

from __future__ import annotations

import numpy as np
from simstream import Stream

from simulators.domains import DOMAINS
from simulators.farm import FarmEnvironment, irrigating, zone_of
from simulators.retail import opening
from simulators.signals import generator, seasonal, sun_elevation


def series(stream: Stream, kind: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(Unix seconds, values) of one metric over every device of a kind."""
    rows = stream.rows(kind)
    t = np.array([r["ts"] for r in rows]) / 1000.0
    return t, np.array([r["metrics"][metric] for r in rows])


def hours(t: np.ndarray) -> np.ndarray:
    return (t % 86_400) / 3600


def at_hour(t: np.ndarray, values: np.ndarray, hour: float, weekdays: bool = False) -> float:
    """Mean of the readings taken within the hour starting at ``hour``."""
    mask = (hours(t) >= hour) & (hours(t) < hour + 1)
    if weekdays:
        mask &= ((t // 86_400 + 3) % 7) < 5
    return float(values[mask].mean())


def site_index(kind: str, number: int, domain: str) -> int:
    """The index in its site of the ``number``-th device of ``kind`` (1-based)."""
    seen = 0
    for index in range(10_000):
        if DOMAINS[domain].kind_at(index) == kind:
            seen += 1
            if seen == number:
                return index
    raise AssertionError("not found")


def device_series(
    stream: Stream, key: tuple[str, str], metric: str
) -> tuple[np.ndarray, np.ndarray]:
    rows = stream.readings[key]
    return np.array([r["ts"] for r in rows]) / 1000.0, np.array(
        [r["metrics"][metric] for r in rows]
    )


# --- farm ---------------------------------------------------------------------------------


def test_light_is_zero_at_night_and_strongest_around_noon(week: Stream) -> None:
    t, light = series(week, "weather_station", "light")
    assert np.all(light[sun_elevation(t) < -6.0] == 0.0)
    assert at_hour(t, light, 12) > 20_000
    assert at_hour(t, light, 12) > 2 * at_hour(t, light, 7)


def test_air_is_warmer_in_the_afternoon_than_before_dawn(week: Stream) -> None:
    t, air = series(week, "weather_station", "air_temp")
    assert at_hour(t, air, 15) > at_hour(t, air, 4) + 3.0


def test_humidity_falls_as_the_day_warms(week: Stream) -> None:
    t, humidity = series(week, "weather_station", "humidity")
    assert at_hour(t, humidity, 15) < at_hour(t, humidity, 4) - 5.0
    assert humidity.min() >= 0.0 and humidity.max() <= 100.0


def test_weather_fronts_move_temperature_and_humidity_together() -> None:
    environment = FarmEnvironment(generator(0, "farm", 3), dt=3600.0)
    t = 1_719_792_000 + np.arange(0, 120 * 86_400, 3600.0)
    weather = environment.block(t)
    warmth = (weather["air_temp"] - seasonal(t, 11.0, 9.0)).reshape(120, 24).mean(axis=1)
    humidity = weather["humidity"].reshape(120, 24).mean(axis=1)
    assert np.corrcoef(warmth, humidity)[0, 1] > 0.5


def test_soil_temperature_swings_less_than_the_air(week: Stream) -> None:
    t_air, air = series(week, "weather_station", "air_temp")
    t_soil, soil = series(week, "soil_probe", "soil_temp")
    air_swing = np.ptp([at_hour(t_air, air, h) for h in range(24)])
    soil_swing = np.ptp([at_hour(t_soil, soil, h) for h in range(24)])
    assert soil_swing < air_swing / 2


def test_valves_flow_exactly_while_their_zone_irrigates(week: Stream) -> None:
    for site, device in week.devices("irrigation_valve"):
        zone = zone_of(site_index("irrigation_valve", int(device[-4:]), "farm"))
        t, flow = device_series(week, (site, device), "flow")
        watering = irrigating(t, np.array(zone))
        assert np.all(flow[watering] > 10.0)
        assert np.all(flow[~watering] == 0.0)


def test_soil_moisture_rises_while_its_zone_irrigates_then_drains(week: Stream) -> None:
    rises, drains = [], []
    for site, device in week.devices("soil_probe"):
        zone = zone_of(site_index("soil_probe", int(device[-4:]), "farm"))
        t, moisture = device_series(week, (site, device), "moisture")
        watering = irrigating(t, np.array(zone))
        starts = np.flatnonzero(watering[1:] & ~watering[:-1]) + 1
        for k in starts[starts + 40 < len(t)]:
            rises.append(moisture[k + 2] - moisture[k - 1])  # 20 minutes of watering
            drains.append(moisture[k + 30] - moisture[k + 3])  # the next five hours
    assert np.mean(rises) > 3.0
    assert np.mean(drains) < 0.0


# --- retail -------------------------------------------------------------------------------


def test_footfall_is_zero_while_the_store_is_closed(week: Stream) -> None:
    t, visitors = series(week, "footfall", "visitors")
    assert np.all(visitors[~opening(t)] == 0.0)
    assert visitors[opening(t)].mean() > 3.0


def test_saturday_is_busier_than_monday(week: Stream) -> None:
    t, visitors = series(week, "footfall", "visitors")
    day = (t // 86_400 + 3) % 7
    assert visitors[day == 5].sum() > 1.3 * visitors[day == 0].sum()


def test_fridges_and_freezers_hold_their_temperature_band(week: Stream) -> None:
    _, fridge = series(week, "fridge", "temp")
    _, freezer = series(week, "freezer", "temp")
    assert 3.0 <= fridge.mean() <= 5.0
    assert np.percentile(fridge, 99) < 7.0
    assert -21.0 <= freezer.mean() <= -17.0
    assert np.percentile(freezer, 99) < -15.0


def test_compressor_power_is_either_standby_or_running(week: Stream) -> None:
    for key in week.devices("fridge") + week.devices("freezer"):
        _, power = device_series(week, key, "power")
        running = power > 100.0
        assert np.all(running | (power < 20.0))
        assert 0.1 < running.mean() < 0.9  # a duty cycle, not always on or off


def test_compressor_runs_more_while_the_store_is_open(week: Stream) -> None:
    t, power = series(week, "fridge", "power")
    assert power[opening(t)].mean() > power[~opening(t)].mean()


def test_doors_open_only_during_opening_hours(week: Stream) -> None:
    t, door = series(week, "fridge", "door")
    assert door.sum() > 0
    assert np.all(opening(t)[door == 1.0])


def test_shelves_lose_stock_to_sales_and_are_refilled_in_the_morning(week: Stream) -> None:
    for key in week.devices("smart_shelf"):
        t, stock = device_series(week, key, "stock")
        h = hours(t)
        rose = np.flatnonzero(np.diff(stock) > 0) + 1
        # stock only ever goes up at the 06:30 restock or the 14:00 top-up
        assert np.all(((h[rose] >= 6.5) & (h[rose] < 6.7)) | ((h[rose] >= 14.0) & (h[rose] < 14.2)))
        morning = stock[(h >= 7.0) & (h < 7.1)]
        assert np.all(morning == morning.max())  # full every morning
        assert stock[(h >= 20.0) & (h < 20.1)].mean() < morning.mean()


# --- city ---------------------------------------------------------------------------------


def test_traffic_is_much_heavier_at_eight_than_at_three(week: Stream) -> None:
    t, vehicles = series(week, "traffic_counter", "vehicles")
    assert at_hour(t, vehicles, 8, weekdays=True) > 5 * at_hour(t, vehicles, 3, weekdays=True)


def test_speed_drops_in_the_rush_hour(week: Stream) -> None:
    t, speed = series(week, "traffic_counter", "speed")
    assert at_hour(t, speed, 8, weekdays=True) < at_hour(t, speed, 3, weekdays=True) - 10.0


def test_weekend_mornings_are_quieter_than_weekday_mornings(week: Stream) -> None:
    t, vehicles = series(week, "traffic_counter", "vehicles")
    eight = (hours(t) >= 8) & (hours(t) < 9)
    weekend = ((t // 86_400 + 3) % 7) >= 5
    assert vehicles[eight & weekend].mean() < 0.7 * vehicles[eight & ~weekend].mean()


def test_no2_and_pm25_follow_traffic(week: Stream) -> None:
    t, no2 = series(week, "air_quality", "no2")
    _, pm25 = series(week, "air_quality", "pm25")
    assert at_hour(t, no2, 9, weekdays=True) > at_hour(t, no2, 4, weekdays=True) + 15.0
    assert at_hour(t, pm25, 9, weekdays=True) > at_hour(t, pm25, 4, weekdays=True)


def test_streets_are_louder_by_day(week: Stream) -> None:
    t, noise = series(week, "noise_meter", "noise")
    assert at_hour(t, noise, 12) > at_hour(t, noise, 3) + 8.0
    assert 30.0 < noise.min() and noise.max() < 100.0


def test_streetlights_are_on_at_night_and_off_by_day(week: Stream) -> None:
    t, power = series(week, "streetlight", "power")
    elevation = sun_elevation(t)
    assert np.all(power[elevation < -6.0] > 0.0)
    assert np.all(power[elevation > 10.0] == 0.0)


def test_streetlights_dim_after_one_in_the_morning(week: Stream) -> None:
    t, power = series(week, "streetlight", "power")
    assert at_hour(t, power, 2) < 0.7 * at_hour(t, power, 23)
