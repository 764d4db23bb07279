"""The simulator: customers and events drawn from a model with planted truth, and a responder."""

from pipelines.simulator.generate import Simulation, SimulationParams, simulate
from pipelines.simulator.planted import PlantedConfig, load_planted

__all__ = ["PlantedConfig", "Simulation", "SimulationParams", "load_planted", "simulate"]
