import os.path as osp

from setuptools import find_packages, setup


def read_version() -> str:
    namespace: dict = {}
    with open(osp.join(osp.dirname(__file__), 'mmdaf', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


def read_requirements(name: str) -> list:
    """Requirement lines of requirements/<name>.txt, following ``-r`` includes."""
    path = osp.join(osp.dirname(__file__), 'requirements', name)
    requirements = []
    with open(path) as f:
        for line in f:
            line = line.split('#')[0].strip()
            if not line:
                continue
            if line.startswith('-r '):
                requirements += read_requirements(line[3:].strip())
            else:
                requirements.append(line)
    return requirements


setup(
    name='mmdaf',
    version=read_version(),
    description='DAF-net (Dual Attention Fusion) for fine-grained image '
    'classification, as an OpenMMLab plugin',
    long_description=open('README.md').read() if osp.exists('README.md') else '',
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('configs', 'tools', 'tests', 'benchmarks')),
    python_requires='>=3.8',
    install_requires=read_requirements('runtime.txt'),
    extras_require={'tests': read_requirements('tests.txt')},
    license='Apache License 2.0',
    zip_safe=False,
)
