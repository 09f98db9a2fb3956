"""Held-out questions: written independently of Quarry's code and of the other question sets,
phrased as different people would type them about an uploaded file (terse, chatty, a few
typos). Each truth is computed here with pandas from the original file; `None` marks a
question that is ambiguous or needs data the file does not have.
"""

from __future__ import annotations

import pandas as pd

from tests.eval.datasets import frame
from tests.eval.questions import Case


def _d(name: str) -> pd.DataFrame:
    return frame(name)


def _weather() -> pd.DataFrame:
    return _d("seattle-weather")


def _cars() -> pd.DataFrame:
    return _d("cars")


def _stocks() -> pd.DataFrame:
    return _d("stocks")


def _barley() -> pd.DataFrame:
    return _d("barley")


def _iowa() -> pd.DataFrame:
    return _d("iowa-electricity")


def _iris() -> pd.DataFrame:
    return _d("iris")


def _airports() -> pd.DataFrame:
    return _d("airports")


def _jobs() -> pd.DataFrame:
    return _d("us-employment")


def _body() -> pd.DataFrame:
    return _d("linnerud_physiological")


def _in_month(data: pd.DataFrame, column: str, year: int, month: int) -> pd.DataFrame:
    dates = data[column]
    return data[(dates.dt.year == year) & (dates.dt.month == month)]


def _top(series: pd.Series) -> str:
    """The label of the single largest value (the question was checked to have no tie)."""
    ordered = series.sort_values(ascending=False)
    assert ordered.iloc[0] != ordered.iloc[1], "tie for the top"
    return str(ordered.index[0])


def _bottom(series: pd.Series) -> str:
    ordered = series.sort_values()
    assert ordered.iloc[0] != ordered.iloc[1], "tie for the bottom"
    return str(ordered.index[0])


def _stock_growth() -> str:
    prices = _stocks().pivot(index="date", columns="symbol", values="price")
    start = prices.loc[pd.Timestamp("2006-01-01")]
    end = prices.loc[pd.Timestamp("2010-01-01")]
    return _top((end - start) / start * 100)


def _stock_means_2008() -> dict:
    data = _stocks()
    return data[data["date"].dt.year == 2008].groupby("symbol")["price"].mean().to_dict()


def _nuclear_share_2010() -> float:
    data = _iowa()
    year = data[data["year"].dt.year == 2010]
    nuclear = year.loc[year["source"] == "Nuclear Energy", "net_generation"].sum()
    return float(nuclear / year["net_generation"].sum() * 100)


def _construction_change() -> float:
    data = _jobs()
    end = _in_month(data, "month", 2009, 12)["construction"].iloc[0]
    start = _in_month(data, "month", 2007, 12)["construction"].iloc[0]
    return float(end - start)


CASES_HELDOUT: list[Case] = [
    # --- seattle-weather -------------------------------------------------------------
    Case(
        "seattle-weather",
        "avg max temp in july 2014",
        lambda: float(_in_month(_weather(), "date", 2014, 7)["temp_max"].mean()),
    ),
    Case(
        "seattle-weather",
        "and for 2015?",
        lambda: float(_in_month(_weather(), "date", 2015, 7)["temp_max"].mean()),
        after="avg max temp in july 2014",
    ),
    Case(
        "seattle-weather",
        "hey, how many days had snow in the whole file?",
        lambda: int((_weather()["weather"] == "snow").sum()),
    ),
    Case(
        "seattle-weather",
        "which weather type has the highest average wind speed?",
        lambda: _top(_weather().groupby("weather")["wind"].mean()),
    ),
    Case(
        "seattle-weather",
        "which yr was the wettest (most total precipitation)?",
        lambda: _top(_weather().groupby(_weather()["date"].dt.year)["precipitation"].sum()),
    ),
    Case(
        "seattle-weather",
        "correlation between temp max and precipitation",
        lambda: float(_weather()["temp_max"].corr(_weather()["precipitation"])),
    ),
    Case("seattle-weather", "what was the humidity like in 2013?", None),
    # --- cars ------------------------------------------------------------------------
    Case(
        "cars",
        "hey, can you tell me how many cars came from Europe?",
        lambda: int((_cars()["Origin"] == "Europe").sum()),
    ),
    Case(
        "cars",
        "mean mpg by origin",
        lambda: _cars().groupby("Origin")["Miles_per_Gallon"].mean().to_dict(),
    ),
    Case(
        "cars",
        "ok now only the 4 cylinder ones",
        lambda: (
            _cars()[_cars()["Cylinders"] == 4]
            .groupby("Origin")["Miles_per_Gallon"]
            .mean()
            .to_dict()
        ),
        after="mean mpg by origin",
    ),
    Case(
        "cars",
        "which origin has the heaviest cars on average",
        lambda: _top(_cars().groupby("Origin")["Weight_in_lbs"].mean()),
    ),
    Case(
        "cars",
        "how many cars have more than 6 cylinders",
        lambda: int((_cars()["Cylinders"] > 6).sum()),
    ),
    Case(
        "cars",
        "corelation between horsepower and weight",
        lambda: float(_cars()["Horsepower"].corr(_cars()["Weight_in_lbs"])),
    ),
    Case(
        "cars",
        "What is the name of the car with the most horsepower?",
        lambda: _top(_cars().set_index("Name")["Horsepower"]),
    ),
    Case("cars", "what's the price of the cheapest car?", None),
    # --- stocks ----------------------------------------------------------------------
    Case(
        "stocks",
        "what was AAPL's highest price",
        lambda: float(_stocks().loc[_stocks()["symbol"] == "AAPL", "price"].max()),
    ),
    Case(
        "stocks",
        "avg price per symbol in 2008",
        _stock_means_2008,
    ),
    Case(
        "stocks",
        "Which company's price grew the most in percent from Jan 2006 to Jan 2010?",
        _stock_growth,
    ),
    Case(
        "stocks",
        "IBM price in March 2003",
        lambda: float(
            _in_month(_stocks()[_stocks()["symbol"] == "IBM"], "date", 2003, 3)["price"].iloc[0]
        ),
    ),
    Case(
        "stocks",
        "how many months was amazon trading above $100?",
        lambda: int(((_stocks()["symbol"] == "AMZN") & (_stocks()["price"] > 100)).sum()),
    ),
    Case("stocks", "what's the price?", None),
    # --- barley ----------------------------------------------------------------------
    Case(
        "barley",
        "which site has the largest total yield",
        lambda: _top(_barley().groupby("site")["yield"].sum()),
    ),
    Case(
        "barley",
        "and the smallest?",
        lambda: _bottom(_barley().groupby("site")["yield"].sum()),
        after="which site has the largest total yield",
    ),
    Case(
        "barley",
        "average yield per variety in 1932",
        lambda: _barley()[_barley()["year"] == 1932].groupby("variety")["yield"].mean().to_dict(),
    ),
    Case(
        "barley",
        "how much did Trebi yield at Waseca in 1931",
        lambda: float(
            _barley()
            .loc[
                (_barley()["variety"] == "Trebi")
                & (_barley()["site"] == "Waseca")
                & (_barley()["year"] == 1931),
                "yield",
            ]
            .iloc[0]
        ),
    ),
    Case("barley", "which one did best?", None),
    # --- iowa-electricity ------------------------------------------------------------
    Case(
        "iowa-electricity",
        "net generation from renewables in 2017",
        lambda: int(
            _iowa()
            .loc[
                (_iowa()["source"] == "Renewables") & (_iowa()["year"].dt.year == 2017),
                "net_generation",
            ]
            .sum()
        ),
    ),
    Case(
        "iowa-electricity",
        "total net_generation by source",
        lambda: _iowa().groupby("source")["net_generation"].sum().to_dict(),
    ),
    Case(
        "iowa-electricity",
        "what percent of the 2010 generation came from nuclear?",
        _nuclear_share_2010,
    ),
    Case(
        "iowa-electricity",
        "In which year was fossil fuel generation the highest?",
        lambda: _top(
            _iowa()[_iowa()["source"] == "Fossil Fuels"]
            .groupby(_iowa()["year"].dt.year)["net_generation"]
            .sum()
        ),
    ),
    Case("iowa-electricity", "how much came from solar in 2015?", None),
    # --- iris ------------------------------------------------------------------------
    Case(
        "iris",
        "mean petal length for each species",
        lambda: _iris().groupby("species")["petalLength"].mean().to_dict(),
    ),
    Case(
        "iris",
        "how many flowers have a sepal width over 3.5?",
        lambda: int((_iris()["sepalWidth"] > 3.5).sum()),
    ),
    Case(
        "iris",
        "which species has the widest sepals on average",
        lambda: _top(_iris().groupby("species")["sepalWidth"].mean()),
    ),
    Case(
        "iris",
        "corr petalLength petalWidth",
        lambda: float(_iris()["petalLength"].corr(_iris()["petalWidth"])),
    ),
    Case(
        "iris",
        "max sepal lenght for virginica",
        lambda: float(_iris().loc[_iris()["species"] == "virginica", "sepalLength"].max()),
    ),
    # --- airports --------------------------------------------------------------------
    Case(
        "airports",
        "how many airprots are in alaska?",
        lambda: int((_airports()["state"] == "AK").sum()),
    ),
    Case(
        "airports",
        "which state has the most airports",
        lambda: _top(_airports()["state"].value_counts()),
    ),
    Case(
        "airports",
        "Number of airports whose country is not USA",
        lambda: int((_airports()["country"] != "USA").sum()),
    ),
    Case(
        "airports",
        "what's the northernmost airport? (name please)",
        lambda: _top(_airports().set_index("name")["latitude"]),
    ),
    Case("airports", "which airport is the busiest?", None),
    # --- us-employment ---------------------------------------------------------------
    Case(
        "us-employment",
        "average monthly nonfarm_change in 2009",
        lambda: float(_jobs().loc[_jobs()["month"].dt.year == 2009, "nonfarm_change"].mean()),
    ),
    Case(
        "us-employment",
        "construction jobs in dec 2007?",
        lambda: int(_in_month(_jobs(), "month", 2007, 12)["construction"].iloc[0]),
    ),
    Case(
        "us-employment",
        "how much did that change by dec 2009?",
        _construction_change,
        after="construction jobs in dec 2007?",
    ),
    Case(
        "us-employment",
        "Which year had the highest average manufacturing employment?",
        lambda: _top(_jobs().groupby(_jobs()["month"].dt.year)["manufacturing"].mean()),
    ),
    Case(
        "us-employment",
        "total nonfarm change per year",
        lambda: _jobs().groupby(_jobs()["month"].dt.year)["nonfarm_change"].sum().to_dict(),
    ),
    Case("us-employment", "what was the unemployment rate in 2010?", None),
    # --- linnerud_physiological ------------------------------------------------------
    Case(
        "linnerud_physiological",
        "is there a correlation between Waist and Pulse? give me the number",
        lambda: float(_body()["Waist"].corr(_body()["Pulse"])),
    ),
    Case(
        "linnerud_physiological",
        "average weight of the people with a waist over 35",
        lambda: float(_body().loc[_body()["Waist"] > 35, "Weight"].mean()),
    ),
    Case("linnerud_physiological", "what's the avg age of the guys in here", None),
]
